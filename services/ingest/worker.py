"""The ingest worker: batched aiokafka loops around the pure decisions.

Reads `posts` and the internal posts-by-user topic in one consumer group (range
assignment, so partition p of both lands on the same worker), and the consent state
changelog for the home partitions it owns. For each post:

- invalid -> `posts.rejected` with the reason;
- its user's home partition is owned here (the producer used murmur2 and `posts` has as
  many partitions as the user-keyed topics) -> decided here;
- otherwise -> forwarded to posts-by-user, to the worker that owns the user's home.

So every post of a user is decided by one worker, which also writes that user's purge
markers: a marker lands in training.posts after every post forwarded before it. Posts that
wait for their author's notice grace period are services.ingest.deferred's (a few hooks here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from consentry import failpoints
from consentry.domain.eligibility import decide
from consentry.domain.model import Decision
from consentry.domain.model import ENFORCED, Invalid, PurgeMarker, Receipt
from consentry.wire import encode_purge_marker, encode_receipt, encode_rejection, encode_training_post, parse_post
from consentry.kafka import BatchSender, producer_options, wait_partitions
from consentry.lag import LagGauge, lag_of
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from consentry.web import StatusServer
from services.ingest import metrics
from services.ingest.consent_view import ConsentView
from services.ingest.deferred import DeferredPosts
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.2


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: IngestWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)


class IngestWorker:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.partitions = settings.partitions
        self.view = ConsentView()
        self.notice_policy = settings.notice_policy  # None: the notice rule is off
        self.deferred = DeferredPosts(settings, self.view)
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._assigned: set[TopicPartition] = set()
        self._owned_homes: set[int] = set()
        self._held: set[TopicPartition] = set()
        self._emitted: dict[str, set[str]] = {}  # user -> objection ids marked by this process
        self._positions: dict[TopicPartition, int] = {}  # next offset to commit, of posts handled since the last send
        # Sends handed to the producer and not yet acknowledged, oldest first, with the offsets
        # they complete: committed only once they (and everything before them) are acknowledged.
        self._inflight: deque[tuple[list[asyncio.Future], dict[TopicPartition, int]]] = deque()
        self._acked: dict[TopicPartition, int] = {}  # acknowledged, commit pending
        self._committed_at = 0.0
        self._consumed: dict[TopicPartition, int] = {}  # next offset to read, for the lag gauge
        self._lag_at = 0.0
        self._lag = LagGauge("ingest")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        self.producer = AIOKafkaProducer(**producer_options(s), linger_ms=5, max_batch_size=512 * 1024)
        await self.producer.start()
        for topic in (self.topics.training_posts, self.topics.posts_by_user, self.topics.receipts, self.topics.posts_deferred):
            count = await wait_partitions(self.producer, topic)
            if count != self.partitions:
                raise RuntimeError(f"{topic} has {count} partitions, expected {self.partitions}")
        self.rejected_partitions = await wait_partitions(self.producer, self.topics.posts_rejected)
        posts_partitions = await wait_partitions(self.producer, self.topics.posts)
        # Decide in place only when `posts` is laid out like the user-keyed topics.
        self.direct = posts_partitions == self.partitions
        log.info("posts has %d partitions; deciding in place: %s", posts_partitions, self.direct)

        self.sender = BatchSender(self.producer)
        self.consent = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="consentry-ingest-consent",
            fetch_max_wait_ms=50,
        )
        await self.consent.start()
        self.posts = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=self.topics.group("ingest"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 << 20,
            fetch_max_wait_ms=50,
            client_id="consentry-ingest",
        )
        await self.posts.start()
        await self.deferred.start(self.sender, self.posts)
        self.settings.warn_if_notice_rule_off()
        self.posts.subscribe([self.topics.posts, self.topics.posts_by_user], listener=_Rebalance(self))
        self.status = StatusServer(s.ingest_host, s.ingest_port, self.readiness)
        await self.status.start()

    async def stop(self) -> None:
        self._stopping.set()
        async with self._lock:
            try:
                await self._flush_and_commit()
            except Exception:
                log.exception("final commit failed; the next owner re-reads from the last commit")
        for closer in (self.posts.stop, self.consent.stop, self.deferred.stop, self.producer.stop, self.status.stop):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping")

    def readiness(self) -> tuple[bool, str]:
        if not self._assigned:
            return False, "waiting for a partition assignment"
        if self._held:
            return False, f"loading consent state for {len(self._held)} partitions"
        return True, f"deciding for home partitions {sorted(self._owned_homes)}"

    async def run(self) -> None:
        while not self._stopping.is_set():
            async with self._lock:
                await self._pump_consent()
                await self.deferred.tick(self._held)  # releases deferred posts when due
                held = bool(self._held)
            if held:
                # Buffered records come back without suspending: let /readyz and /metrics answer.
                await asyncio.sleep(0)
                continue
            # Outside the lock: before the first assignment getmany waits for one, and the
            # rebalance listener that brings it needs the lock.
            batch = await self.posts.getmany(timeout_ms=self.settings.ingest_poll_ms, max_records=self.settings.ingest_max_records)
            async with self._lock:
                if batch:
                    self._handle_posts(self._still_ours(batch))
                    await self._send()
                # Pipelined: this batch travels to the broker while the next one is read and
                # decided; the previous one must be acknowledged before its offsets are committed.
                await self._settle(keep=1 if batch else 0)
            self._update_lag()

    def _still_ours(self, batch: dict[TopicPartition, list]) -> dict[TopicPartition, list]:
        """Drop records fetched before a rebalance took or paused their partition."""
        ours = {}
        for tp, records in batch.items():
            if tp not in self._assigned:
                continue
            if tp in self._held:
                self.posts.seek(tp, records[0].offset)  # read again once consent state is loaded
                continue
            ours[tp] = records
        return ours

    # ------------------------------------------------------------------ rebalance

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._flush_and_commit()
            self._positions.clear()
            self._acked.clear()
            self._assigned = set()
            self.deferred.revoke()

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            # Held before anything awaits: until the consent state is loaded, not ready.
            self._held = set(assigned)
            self.posts.pause(*assigned)
            metrics.PARTITIONS_HELD.set(len(self._held))
            self._assigned = set(assigned)
            self._consumed = {}
            homes = {tp.partition for tp in assigned if tp.topic == self.topics.posts_by_user}
            self._owned_homes = homes
            # Reload the consent state of every owned home from the start of its changelog.
            self.view.reset(homes)
            self._emitted.clear()
            changelog = [TopicPartition(self.topics.consent_state, p) for p in homes]
            self.consent.assign(changelog)
            if changelog:
                await self.consent.seek_to_beginning(*changelog)
            await self.deferred.assign(homes)  # and reload the deferred posts of each
            log.info("assigned %d partitions; loading consent state of home partitions %s", len(assigned), sorted(homes))

    # ------------------------------------------------------------------ consent state

    async def _pump_consent(self) -> None:
        touched: set[tuple[int, str]] = set()
        # getmany on an empty assignment would wait for one forever.
        if self.consent.assignment():
            timeout = 50 if self._held else 0
            batch = await self.consent.getmany(timeout_ms=timeout, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    user = self.view.apply(tp.partition, record.key, record.value)
                    if user is not None:
                        touched.add((tp.partition, user))
        if self._held:
            await self._check_loaded()
            if self._held:
                return
        if touched:
            metrics.CONSENT_USERS.set(self.view.user_count())
            await self._enforce(touched)
            self.deferred.on_consent_changed(touched)

    async def _check_loaded(self) -> None:
        for p in sorted(self._owned_homes - self.view.ready):
            tp = TopicPartition(self.topics.consent_state, p)
            highwater = self.consent.highwater(tp)
            if highwater is None:
                return
            if await self.consent.position(tp) < highwater:
                return
            self.view.ready.add(p)
        if not await self.deferred.load():
            return
        # Every owned home is loaded: enforce whatever is pending, then let posts flow.
        await self._enforce({(p, u) for p in self._owned_homes for u in self.view.users_with_pending(p)})
        self.posts.resume(*self._held)
        log.info("consent state loaded for %s (%d users); deciding", sorted(self._owned_homes), self.view.user_count())
        self._held = set()
        metrics.PARTITIONS_HELD.set(0)
        metrics.PARTITIONS_READY.set(len(self.view.ready))
        metrics.CONSENT_USERS.set(self.view.user_count())

    async def _enforce(self, touched: set[tuple[int, str]]) -> None:
        """Write a purge marker for every newly pending objection, then confirm it (and any
        pending withdrawal, which needs no marker) with an `enforced` receipt."""
        confirmations: list[tuple[int, PurgeMarker | None, Receipt]] = []
        now = now_us()
        for partition, user in touched:
            objections, withdrawals = self.view.pending(partition, user)
            if not objections and not withdrawals:
                self._emitted.pop(user, None)
                continue
            done = self._emitted.setdefault(user, set())
            fresh_objections = tuple(i for i in objections if i not in done)
            fresh_withdrawals = tuple(i for i in withdrawals if i not in done)
            if fresh_objections or fresh_withdrawals:
                marker = PurgeMarker(user, fresh_objections, now) if fresh_objections else None
                receipt = Receipt(ENFORCED, user, fresh_objections + fresh_withdrawals, now)
                confirmations.append((partition, marker, receipt))
        if not confirmations:
            return
        markers = [(p, m) for p, m, _ in confirmations if m is not None]
        # Every post forwarded so far is acknowledged before a marker is written after it.
        await self._settle(keep=0)
        for partition, marker in markers:
            self.sender.append(self.topics.training_posts, partition, marker.user_id.encode(), encode_purge_marker(marker))
        await self.sender.flush()
        metrics.PURGE_MARKERS.inc(len(markers))
        for partition, _, receipt in confirmations:
            self.sender.append(self.topics.receipts, partition, receipt.user_id.encode(), encode_receipt(receipt))
            self._emitted[receipt.user_id].update(receipt.objection_ids)
        await self.sender.flush()
        objections = sum(len(m.objection_ids) for _, m in markers)
        withdrawals = sum(len(r.objection_ids) for _, _, r in confirmations) - objections
        log.info("enforced %d objections (purge markers written) and %d withdrawals", objections, withdrawals)

    # ------------------------------------------------------------------ posts

    def _handle_posts(self, batch: dict[TopicPartition, list]) -> None:
        topics = self.topics
        now = now_us()
        sender = self.sender
        view = self.view
        policy = self.notice_policy
        owned = self._owned_homes
        n = self.partitions
        accepted = 0
        dropped: dict[str, int] = {}
        rejected: dict[str, int] = {}
        moved = 0
        # Hoisted out of the per-post loop (hot path: attribute and property look-ups show in profiles).
        append, intervals, notices, direct = sender.append, view.intervals, view.notices, self.direct
        training_posts, posts_by_user, accept, deferred = topics.training_posts, topics.posts_by_user, Decision.ACCEPT, Decision.DEFERRED
        for tp, records in batch.items():
            from_posts = tp.topic == topics.posts
            metrics.POSTS_IN.labels("posts" if from_posts else "posts_by_user").inc(len(records))
            for record in records:
                post = parse_post(record.value, record.key)
                if type(post) is Invalid:
                    rejected[post.code] = rejected.get(post.code, 0) + 1
                    sender.append(
                        topics.posts_rejected,
                        record.partition % self.rejected_partitions,
                        record.key,
                        encode_rejection(post, tp.topic, tp.partition, record.offset, record.value, now),
                    )
                    continue
                home = home_partition(post.user_id, n)
                if from_posts and not (direct and home == tp.partition and home in owned):
                    moved += 1
                    append(posts_by_user, home, record.key, record.value)
                    continue
                if home not in owned:  # cannot happen with range assignment; never decide blind
                    moved += 1
                    append(posts_by_user, home, record.key, record.value)
                    continue
                decision = decide(post, intervals(home, post.user_id), now, notices(home, post.user_id), policy)
                if decision is accept:
                    accepted += 1
                    append(training_posts, home, record.key, encode_training_post(post, now))
                elif decision is deferred:  # not a drop: held until the notice grace period ends
                    self.deferred.hold(home, post, record.value)
                else:
                    dropped[decision] = dropped.get(decision, 0) + 1
            self._positions[tp] = self._consumed[tp] = records[-1].offset + 1
        if accepted:
            metrics.ACCEPTED.inc(accepted)
        if moved:
            metrics.REPARTITIONED.inc(moved)
        for reason, count in dropped.items():
            metrics.DROPPED.labels(reason.value).inc(count)
        for reason, count in rejected.items():
            metrics.REJECTED.labels(reason).inc(count)

    async def _send(self) -> None:
        """Hand the decided posts to the producer; their offsets wait for the acks."""
        futures = await self.sender.send()
        positions, self._positions = self._positions, {}
        if futures or positions:
            self._inflight.append((futures, positions))

    async def _settle(self, keep: int) -> None:
        """Wait for the acks of all but the newest `keep` sends, then commit their offsets
        (while busy, at most every COMMIT_EVERY_S: a commit is a round trip, and a replay
        after a crash is harmless). A failed send raises here: nothing read after it is
        committed, so it is read again."""
        while len(self._inflight) > keep:
            futures, positions = self._inflight[0]
            if futures:
                await asyncio.gather(*futures)
            self._inflight.popleft()
            self._acked.update(positions)
        now = time.monotonic()
        if self._acked and (keep == 0 or now - self._committed_at >= COMMIT_EVERY_S):
            failpoints.hit("ingest.before_commit")
            offsets, self._acked = self._acked, {}
            await self.posts.commit(offsets)
            self._committed_at = now

    async def _flush_and_commit(self) -> None:
        await self._send()
        await self._settle(keep=0)
        await self.sender.flush()

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 5:
            return
        self._lag_at = now
        self._lag.update({(tp.topic, tp.partition): lag_of(self.posts.highwater(tp), self._consumed.get(tp)) for tp in self._assigned})
