"""The ingest worker: the pure decisions on the Kafka worker skeleton (consentry.kafka_worker).

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

The skeleton holds new partitions until `load` says the consent state (and the deferred
posts) of every owned home is read; each batch is flushed (handed to the producer) at once,
and its offsets are committed once acknowledged, one batch later (`in_flight=1`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from opentelemetry.trace import SpanKind

from consentry import failpoints, tracing
from consentry.domain.eligibility import decide_values
from consentry.domain.model import ENFORCED, NO_NOTICES, Decision, Invalid, PurgeMarker, Receipt
from consentry.wire import (
    SCHEMA_REGISTRY, encode_drop_count, encode_purge_marker, encode_receipt, encode_rejection, encode_training_values, parse_common_post, parse_post, unframe,
)
from consentry.kafka import BatchSender, client_options, producer_options, wait_partitions
from consentry.logs import ids, user_ref
from consentry.kafka_worker import Batch, Bounds, Flushed, KafkaWorker, group_consumer
from consentry.partitioning import home_partition
from consentry.timeutil import format_rfc3339, now_us, parse_rfc3339
from consentry.domain.audit import day_of
from consentry.web import StatusServer
from services.ingest import metrics
from services.ingest.consent_view import ConsentView
from services.ingest.deferred import DeferredPosts
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.2
# Changelog records applied per turn of the loop while loading: a few tens of ms, so the loop
# polls posts and the heartbeats go out between chunks even on a loaded machine.
LOAD_CHUNK_RECORDS = 2_000
# How long after a revocation the consent state read so far is kept for the next assignment
# (far below the changelog's delete.retention.ms: no tombstone can have been compacted away).
KEEP_LOADED_FOR_S = 300.0
# Users whose home partition is remembered in a plain dict (a look-up per post: a third of the
# lru_cache's cost, which builds and hashes an (id, count) key each time); emptied beyond this
# many, about 100 bytes each (the id strings are the posts').
HOME_MEMO_USERS = 100_000


class IngestWorker(KafkaWorker):
    def __init__(self, settings: IngestSettings) -> None:
        super().__init__(
            "ingest",
            Bounds(
                max_records=settings.ingest_max_records,
                poll_ms=settings.ingest_poll_ms,
                flush_records=settings.ingest_max_records,
                flush_seconds=0.0,  # every batch, at once: it travels while the next is decided
                in_flight=1,
                commit_every_seconds=COMMIT_EVERY_S,
            ),
        )
        self.settings = settings
        self.topics = settings.topics
        self.partitions = settings.partitions
        self.view = ConsentView()
        self.notice_policy = settings.notice_policy  # None: the notice rule is off
        self.posts_framing = settings.posts_framing  # json, or schema-registry (consentry.wire.unframe)
        self.deferred = DeferredPosts(settings, self.view)
        self._owned_homes: set[int] = set()
        self._emitted: dict[str, set[str]] = {}  # user -> objection ids marked by this process
        self._traced: dict[str, Sequence[tuple[str, bytes]]] = {}  # user -> headers of their last changelog record
        self._positions: dict[TopicPartition, int] = {}  # next offset to commit, of posts handled since the last flush
        self._kept: dict[int, int] = {}  # home -> next changelog offset, of the homes read before the last revocation
        self._revoked_at = float("-inf")
        # Posts dropped per (home, user, day, reason) since the last emission to drop-counts
        # (the audit trail's counts: aggregated here, never one record per post).
        self._drops: dict[tuple[int, str, str, str], int] = {}
        self._drops_sent_at = self._clock()
        self._homes: dict[str, int] = {}  # user -> home partition (HOME_MEMO_USERS)

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
            **client_options(s),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="consentry-ingest-consent",
            fetch_max_wait_ms=50,
        )
        await self.consent.start()
        await self.deferred.start(self.sender, self.producer)
        self.settings.warn_if_notice_rule_off()
        posts = group_consumer(
            client_options(s),
            self.topics.group("ingest"),
            "consentry-ingest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_partition_fetch_bytes=4 << 20,
            fetch_max_wait_ms=50,
        )
        await self.start_consumer(posts, [self.topics.posts, self.topics.posts_by_user])
        self.status = StatusServer(s.ingest_host, s.ingest_port, self.readiness)
        await self.status.start()

    async def stop(self) -> None:
        async with self._lock:  # the drop counts held since the last emission: written before stopping
            if self._drops:
                try:
                    await asyncio.gather(*await self._send_drop_counts())
                except Exception:
                    log.exception("the last drop counts were not acknowledged: the audit trail misses them")
        await self.stop_consuming()
        for closer in (self.consumer.stop, self.consent.stop, self.deferred.stop, self.producer.stop, self.status.stop):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping")

    def readiness(self) -> tuple[bool, str]:
        if not self.assigned:
            return False, "waiting for a partition assignment"
        if self.held:
            return False, f"loading consent state for {len(self.held)} partitions"
        return True, f"deciding for home partitions {sorted(self._owned_homes)}"

    # ------------------------------------------------------------------ the skeleton's hooks

    async def on_assigned(self, partitions: set[TopicPartition]) -> bool:
        """Start loading the consent state (and the deferred posts) of the owned homes: until
        `load` says they are read, the skeleton holds every partition (not ready)."""
        metrics.ASSIGNMENTS.inc()
        metrics.PARTITIONS_HELD.set(len(partitions))
        homes = {tp.partition for tp in partitions if tp.topic == self.topics.posts_by_user}
        self._owned_homes = homes
        # A home this worker read before the rebalance (moments ago) goes on from where its
        # changelog was read; every other one loads from the start. Either way it is read up
        # to the high watermark before its posts are decided.
        kept, self._kept = self._kept, {}
        if self._clock() - self._revoked_at > KEEP_LOADED_FOR_S:
            kept = {}
        kept = {p: offset for p, offset in kept.items() if p in homes}
        self.view.reset(homes, keep=set(kept))
        self._emitted.clear()
        changelog = [TopicPartition(self.topics.consent_state, p) for p in homes]
        self.consent.assign(changelog)
        fresh = [tp for tp in changelog if tp.partition not in kept]
        if fresh:
            await self.consent.seek_to_beginning(*fresh)
        for tp in changelog:
            if tp.partition in kept:
                self.consent.seek(tp, kept[tp.partition])
        await self.deferred.assign(homes)  # and reload the deferred posts of each
        log.info(
            "assigned %d partitions; loading consent state of home partitions %s (going on with %s)",
            len(partitions), sorted(homes), sorted(kept),
        )
        return False

    async def load(self) -> bool:
        # What the records read here touch needs no enforcing of its own: once everything is
        # loaded, every user with something pending is enforced.
        await self._read_consent(timeout_ms=50, max_records=LOAD_CHUNK_RECORDS)
        await failpoints.slow("ingest.load_chunk")
        return await self._check_loaded()

    async def tick(self, ready: bool) -> bool:
        """Consent changes (enforced, their users' deferred posts decided again), then the
        deferred posts' turn (releases when due). Never over a memory bound: the deferred
        posts' index spills instead of stopping the reading of posts."""
        if ready:
            touched = await self._read_consent(timeout_ms=0)
            if touched:
                metrics.CONSENT_USERS.set(self.view.user_count())
                await self._enforce(touched)
                self.deferred.on_consent_changed(touched)
        return await self.deferred.tick(ready)  # releases deferred posts when due

    async def handle(self, batch: Batch) -> int:
        self._handle_posts(batch)
        failpoints.hit("ingest.after_decide")  # decided, not yet sent (tests: a zombie's window)
        return sum(len(records) for records in batch.values())

    async def flush(self) -> Flushed:
        """Hand the decided posts to the producer; their offsets wait for the acks."""
        acks = await self.sender.send()
        acks += await self.deferred.send()  # the deferred posts' appends, before their offsets are committed
        if self._drops and self._clock() - self._drops_sent_at >= self.settings.drop_counts_interval_s:
            acks += await self._send_drop_counts()
        positions, self._positions = self._positions, {}
        return Flushed(positions, acks)

    async def _send_drop_counts(self) -> list[Any]:
        """The counts since the last emission, with this flush (its acks before its offsets are
        committed). A crash loses at most one interval's counts; a replay counts its drops again."""
        drops, self._drops = self._drops, {}
        self._drops_sent_at = self._clock()
        now = now_us()
        topic = self.topics.drop_counts
        for (home, user, day, reason), count in drops.items():
            self.sender.append(topic, home, user.encode(), encode_drop_count(user, day, reason, count, now))
        metrics.DROP_COUNT_RECORDS.inc(len(drops))
        return await self.sender.send()

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self.sender.flush()
        # Whatever was loading (or loaded) stops: nothing is read, enforced or released for
        # these homes until the next assignment. What was read of their consent state is kept
        # for it: a rebalance (a worker joining, leaving, restarting) mostly hands the same
        # homes back, and years of state are not read again from the start for each.
        self._kept = {}
        for tp in self.consent.assignment():
            try:
                self._kept[tp.partition] = await self.consent.position(tp)
            except Exception:  # no position yet: that home starts again from the beginning
                log.warning("no position in %s[%d] at revocation: it loads again from the start", tp.topic, tp.partition)
        self._revoked_at = self._clock()
        self._owned_homes = set()
        self.consent.assign([])
        await self.deferred.revoke()
        metrics.PARTITIONS_READY.set(0)

    # ------------------------------------------------------------------ consent state

    async def _read_consent(self, timeout_ms: int, max_records: int = 10_000) -> set[tuple[int, str]]:
        """Apply what the changelog holds (waiting up to `timeout_ms`); return the users touched."""
        touched: set[tuple[int, str]] = set()
        # getmany on an empty assignment would wait for one forever.
        if self.consent.assignment():
            batch = await self.consent.getmany(timeout_ms=timeout_ms, max_records=max_records)
            for tp, records in batch.items():
                for record in records:
                    user = self.view.apply(tp.partition, record.key, record.value)
                    if user is not None:
                        touched.add((tp.partition, user))
                        if record.headers:  # the trace of the objection that wrote it (consentry/tracing.py)
                            self._traced[user] = record.headers
        return touched

    async def _check_loaded(self) -> bool:
        for p in sorted(self._owned_homes - self.view.ready):
            tp = TopicPartition(self.topics.consent_state, p)
            highwater = self.consent.highwater(tp)
            if highwater is None:
                return False
            if await self.consent.position(tp) < highwater:
                return False
            self.view.ready.add(p)
        if not await self.deferred.load():
            return False
        # Every owned home is loaded: enforce whatever is pending, then let posts flow.
        await self._enforce({(p, u) for p in self._owned_homes for u in self.view.users_with_pending(p)})
        log.info("consent state loaded for %s (%d users); deciding", sorted(self._owned_homes), self.view.user_count())
        metrics.PARTITIONS_HELD.set(0)
        metrics.PARTITIONS_READY.set(len(self.view.ready))
        metrics.CONSENT_USERS.set(self.view.user_count())
        return True

    async def _enforce(self, touched: set[tuple[int, str]]) -> None:
        """Write a purge marker for every newly pending objection, then confirm it (and any
        pending withdrawal, which needs no marker) with an `enforced` receipt."""
        confirmations: list[tuple[int, PurgeMarker | None, Receipt]] = []
        now = now_us()
        for partition, user in touched:
            objections, withdrawals = self.view.pending(partition, user)
            if not objections and not withdrawals:
                self._emitted.pop(user, None)
                self._traced.pop(user, None)
                continue
            done = self._emitted.setdefault(user, set())
            fresh_objections = tuple(i for i in objections if i not in done)
            fresh_withdrawals = tuple(i for i in withdrawals if i not in done)
            if fresh_objections or fresh_withdrawals:
                marker = PurgeMarker(user, fresh_objections, now) if fresh_objections else None
                receipt = Receipt(ENFORCED, user, fresh_objections + fresh_withdrawals, now)
                confirmations.append((partition, marker, receipt))
            else:
                self._traced.pop(user, None)  # nothing new to enforce: no span
        if not confirmations:
            return
        markers = [(p, m) for p, m, _ in confirmations if m is not None]
        # Every post forwarded so far is acknowledged before a marker is written after it.
        await self.settle()
        # One span per user, child of the objection's consent.apply span; the marker and the
        # receipt carry it on (to the sink's purge, to the consent table).
        spans = {user: self._enforce_span(partition, user, m, r) for partition, m, r in confirmations for user in (r.user_id,)}
        try:
            for partition, marker in markers:
                self.sender.append(
                    self.topics.training_posts, partition, marker.user_id.encode(), encode_purge_marker(marker), spans[marker.user_id][1]
                )
            await self.sender.flush()
            metrics.PURGE_MARKERS.inc(len(markers))
            for partition, _, receipt in confirmations:
                self.sender.append(self.topics.receipts, partition, receipt.user_id.encode(), encode_receipt(receipt), spans[receipt.user_id][1])
                self._emitted[receipt.user_id].update(receipt.objection_ids)
            await self.sender.flush()
        finally:
            for span, _ in spans.values():
                if span is not None:
                    span.end()
        objections = sum(len(m.objection_ids) for _, m in markers)
        withdrawals = sum(len(r.objection_ids) for _, _, r in confirmations) - objections
        log.info("enforced %d objections (purge markers written) and %d withdrawals", objections, withdrawals)

    def _enforce_span(self, partition: int, user: str, marker: PurgeMarker | None, receipt: Receipt) -> tuple[Any, Sequence[tuple[str, bytes]]]:
        """(the span of this user's enforcement or None, the headers its records carry); logs it."""
        parent = tracing.context_from(self._traced.pop(user, None))
        where = ids(user_id=user, topic=self.topics.training_posts, partition=partition)
        if parent is None:
            log.info("enforced %s (purge marker: %s)", ",".join(receipt.objection_ids), marker is not None, extra=where)
            return None, ()
        span = tracing.start_span(
            "ingest.enforce", parent, kind=SpanKind.PRODUCER, objection_ids=",".join(receipt.objection_ids),
            purge_marker=marker is not None, user=user_ref(user), **{"messaging.destination.partition.id": str(partition)},
        )
        with tracing.use_span(span):
            log.info("enforced %s (purge marker: %s)", ",".join(receipt.objection_ids), marker is not None, extra=where)
            return span, tracing.headers()

    # ------------------------------------------------------------------ posts

    def _handle_posts(self, batch: Batch) -> None:
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
        append, entries, direct = sender.append, view.entries, self.direct
        training_posts, posts_by_user, accept, deferred = topics.training_posts, topics.posts_by_user, Decision.ACCEPT, Decision.DEFERRED
        schema_registry = self.posts_framing == SCHEMA_REGISTRY
        drops, day = self._drops, day_of(now)
        hold = self.deferred.hold
        homes = self._homes
        if len(homes) > HOME_MEMO_USERS:
            homes.clear()
        known_home = homes.get
        for tp, records in batch.items():
            from_posts = tp.topic == topics.posts
            metrics.POSTS_IN.labels("posts" if from_posts else "posts_by_user").inc(len(records))
            framed = from_posts and schema_registry
            # In place: every post of this partition whose user's home it is (and is owned here).
            in_place = tp.partition if (not from_posts or direct) and tp.partition in owned else -1
            in_place_users = entries(in_place) if in_place >= 0 else None
            for record in records:
                key = record.key
                # The framing is the upstream producers' (posts): what ingest writes (re-keyed,
                # deferred) is the post's plain JSON.
                value = unframe(record.value) if framed else record.value
                # The common shape first (no Post built); anything else, and every rejection, is
                # the generic validator's.
                fields = None if type(value) is Invalid else parse_common_post(value, key)
                if fields is not None:
                    post_id, user_id, created_at, visibility, text, lang, country, minor = fields
                    post = created_us = None
                else:
                    post = value if type(value) is Invalid else parse_post(value, key)
                    if type(post) is Invalid:
                        rejected[post.code] = rejected.get(post.code, 0) + 1
                        sender.append(
                            topics.posts_rejected,
                            record.partition % self.rejected_partitions,
                            key,
                            encode_rejection(post, tp.topic, tp.partition, record.offset, record.value, now),
                        )
                        continue
                    post_id, user_id, visibility, text, lang, country, minor = (
                        post.post_id, post.user_id, post.visibility, post.text, post.lang, post.country, post.author_is_minor
                    )
                    created_at, created_us = post.created_at_text or format_rfc3339(post.created_at_us), post.created_at_us
                home = known_home(user_id)
                if home is None:
                    home = homes[user_id] = home_partition(user_id, n)
                if home != in_place:
                    if from_posts or home not in owned:  # the latter cannot happen with range assignment; never decide blind
                        moved += 1
                        append(posts_by_user, home, key, value)
                        continue
                # One look-up: (intervals, pending, withdrawals, notice facts).
                entry = (in_place_users if home == in_place else entries(home)).get(user_id)  # type: ignore[union-attr]
                if entry is None:
                    decision = decide_values((), None, minor, visibility, country, now, NO_NOTICES, policy)
                else:
                    intervals = entry[0]
                    if intervals and created_us is None:
                        created_us = parse_rfc3339(created_at)  # canonical: parse_common_post checked it parses
                    decision = decide_values(intervals, created_us, minor, visibility, country, now, entry[3], policy)
                if decision is accept:
                    accepted += 1
                    append(training_posts, home, key, encode_training_values(post_id, user_id, created_at, text, lang, country, now))
                elif decision is deferred:  # not a drop: held until the notice grace period ends
                    hold(home, post if post is not None else parse_post(value, key), value)
                else:
                    dropped[decision] = dropped.get(decision, 0) + 1
                    counted = (home, user_id, day, decision.value)
                    drops[counted] = drops.get(counted, 0) + 1
            self._positions[tp] = records[-1].offset + 1
        if accepted:
            metrics.ACCEPTED.inc(accepted)
        if moved:
            metrics.REPARTITIONED.inc(moved)
        for reason, count in dropped.items():
            metrics.DROPPED.labels(reason.value).inc(count)
        for reason, count in rejected.items():
            metrics.REJECTED.labels(reason).inc(count)
