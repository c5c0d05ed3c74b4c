"""The sink worker: batches training.posts (bounded by size and time) into the store.

On the Kafka worker skeleton (consentry.kafka_worker): on assignment it loads the positions
the table recorded before reading on; each flush applies the batch to the store (recording
its positions in the same Delta commit) and confirms its purges, then the skeleton commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.trace import SpanKind

from consentry import failpoints, tracing
from consentry.domain.model import PURGED, PurgeMarker, Receipt
from consentry.logs import ids, user_ref
from consentry.wire import encode_receipt, encode_run_user, parse_training_message, run_user_key
from consentry.kafka import BatchSender, client_options, producer_options
from consentry.kafka_worker import Batch, Bounds, Flushed, KafkaWorker, group_consumer
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from consentry.web import StatusServer
from services.sink import metrics
from consentry.domain.lineage import runs_that_read
from consentry.domain.purge import Plan, plan_batch
from services.sink.lineage import LineageFollower
from services.sink.resume import Reason, Resume, resume_point
from services.sink.settings import SinkSettings
from services.sink.store import DeltaTrainingStore, Purged, TrainingStore
from services.sink.writer import IdempotentWriter, purged_rows

log = logging.getLogger(__name__)

RECONCILE_FIRST_DELAY_S = 60.0  # the first pass after start (sooner if the interval is shorter)
RECONCILE_RETRY_S = 300.0  # after a failed pass


async def record_timestamps(connection: Mapping[str, Any], wanted: dict[TopicPartition, int], timeout: float = 10.0) -> dict[TopicPartition, int]:
    """The timestamp of the record at each (partition, offset), where the partition has it
    (`connection`: `client_options(settings)`)."""
    if not wanted:
        return {}
    probe = AIOKafkaConsumer(**connection, enable_auto_commit=False, fetch_max_wait_ms=50, client_id="consentry-sink-probe")
    await probe.start()
    found: dict[TopicPartition, int] = {}
    try:
        probe.assign(list(wanted))
        for tp, offset in wanted.items():
            probe.seek(tp, offset)
        pending = set(wanted)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await probe.getmany(*pending, timeout_ms=100)
            for tp, records in batch.items():
                match = [r for r in records if r.offset == wanted[tp]]
                if match:
                    found[tp] = match[0].timestamp
                pending.discard(tp)  # it answered: the record is there or it is not
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None and highwater <= wanted[tp]:
                    pending.discard(tp)  # the partition is shorter than that
    finally:
        await probe.stop()
    return found


class SinkWorker(KafkaWorker):
    def __init__(self, settings: SinkSettings, store: TrainingStore | None = None) -> None:
        super().__init__(
            "sink",
            Bounds(
                max_records=settings.sink_batch_rows,
                poll_ms=int(settings.sink_flush_seconds * 1000),
                flush_records=settings.sink_batch_rows,
                flush_seconds=settings.sink_flush_seconds,
                stats_seconds=settings.sink_stats_seconds,
            ),
        )
        self.settings = settings
        self.topics = settings.topics
        self._store = store
        self._values: list[bytes] = []
        self._replayed: list[bytes] = []  # read again but already in the table (see writer.py)
        self._applied: dict[TopicPartition, int] = {}
        self._offsets: dict[TopicPartition, int] = {}
        self._last_ts: dict[TopicPartition, int] = {}  # timestamp of the last record read, per partition
        self._reconciler: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        # One table chore at a time: a vacuum must not delete the files a compaction just
        # replaced while the reconciliation pass is still scanning them.
        self._chores = asyncio.Lock()
        self._traced: dict[str, Any] = {}  # user -> the trace context their purge marker carried

    async def start(self) -> None:
        s = self.settings
        store = self._store or await asyncio.to_thread(DeltaTrainingStore, s.store_uri, s.storage_options, s.training_store_buckets,
                                                          s.training_store_file_kib << 10)
        # What a crashed writer wrote but never committed (maybe posts since purged), once older
        # than any commit takes: a younger file may be another sink's write in flight.
        orphans = await asyncio.to_thread(store.remove_orphans)
        if orphans:
            log.info("removed %d uncommitted files left by a previous run", orphans)
        self.writer = IdempotentWriter(store)
        await self._refresh_store_gauges()
        buckets = getattr(store, "buckets", None)
        if buckets is not None and buckets % s.partitions:
            log.warning("the training store has %d buckets, not a multiple of the %d partitions: sinks share buckets, and their "
                        "purges may be overtaken by each other's commits (retried); see docs/operations.md", buckets, s.partitions)
        log.info("training store at %s (%s buckets)", store.uri, buckets)
        self.producer = AIOKafkaProducer(**producer_options(s), linger_ms=5)
        await self.producer.start()
        self.sender = BatchSender(self.producer)
        self.lineage = LineageFollower(s, store.uri)  # read in full before the first purge is confirmed
        await self.lineage.start()
        consumer = group_consumer(
            client_options(s),
            self.topics.group("sink"),
            "consentry-sink",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 << 20,
            # A Delta commit can outlast the default poll interval on a big batch.
            max_poll_interval_ms=600_000,
        )
        await self.start_consumer(consumer, [self.topics.training_posts])
        self.status = StatusServer(s.sink_host, s.sink_port, self.readiness)
        await self.status.start()
        self._reconciler = asyncio.create_task(self._reconcile_forever()) if s.reconcile_interval_s > 0 else None
        if s.compact_interval_s > 0 or s.vacuum_interval_s > 0:
            self._housekeeper = asyncio.create_task(self._housekeeping_forever())

    def readiness(self) -> tuple[bool, str]:
        if not self.assigned:
            return False, "waiting for a partition assignment"
        return True, f"writing {len(self.assigned)} partitions"

    async def stop(self) -> None:
        for chore in (self._reconciler, self._housekeeper):
            if chore is not None:
                chore.cancel()
                await asyncio.gather(chore, return_exceptions=True)
        await self.stop_consuming()  # the pending batch is applied and committed, else re-read on restart
        for closer in (self.consumer.stop, self.producer.stop, self.status.stop, self.lineage.stop):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping")

    # ------------------------------------------------------------------ reconciliation

    async def _reconcile_forever(self) -> None:
        try:
            await self._reconcile_periodically()
        except asyncio.CancelledError:
            raise
        except Exception:  # never silently: the stale alert would be the only sign
            metrics.ERRORS.labels("reconcile").inc()
            log.exception("the periodic reconciliation stopped; no pass runs until the sink restarts")

    async def _reconcile_periodically(self) -> None:
        """A reconciliation pass (services.sink.reconcile) every `reconcile_interval_s`, counted
        from the last pass anyone recorded with the table (the sink's or `consentry reconcile`'s),
        by the replica that owns partition 0 of training.posts only; the first one shortly
        after start. Its deletes hold the worker's lock: they never race this sink's commits."""
        from services.sink.reconcile import run_pass

        interval = self.settings.reconcile_interval_s
        store = self.writer.store
        if isinstance(store, DeltaTrainingStore):  # its own table object: the pass scans in another thread
            # Loaded for each pass, released after it: the sink holds one snapshot of the log
            # between passes (its memory follows the table's file count).
            store = store.twin()
        not_before = time.time() + min(interval, RECONCILE_FIRST_DELAY_S)
        retry_at = 0.0
        while not self._stopping.is_set():
            try:
                record = await asyncio.to_thread(store.reconcile_record)
            except Exception:
                record = None
            last = record.last_ended_at_us / 1e6 if record is not None else 0.0
            due = max(last + interval, not_before, retry_at)
            if time.time() < due:
                await self._sleep(min(due - time.time(), 30.0))  # re-read: another replica or the command may run one
                continue
            if TopicPartition(self.topics.training_posts, 0) not in self.assigned:
                await self._sleep(min(interval, 5.0))
                continue
            try:
                async with self._chores:
                    try:
                        result = await run_pass(self.settings, store, lock=self._lock)
                    finally:
                        store.release()
            except Exception:
                metrics.ERRORS.labels("reconcile").inc()
                log.exception("reconciliation pass failed; trying again in %.0fs", min(interval, RECONCILE_RETRY_S))
                retry_at = time.time() + min(interval, RECONCILE_RETRY_S)
                continue
            if result.record is not None:
                metrics.RECONCILIATION.record = result.record

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping_forever(self) -> None:
        """Compaction and vacuum on their schedules (services.sink.housekeeping), by the replica
        that owns partition 0 of training.posts."""
        from services.sink.housekeeping import Housekeeping

        store = self.writer.store
        if isinstance(store, DeltaTrainingStore):  # its own table object: its runs happen in another thread
            store = store.twin()  # loaded for each run, released after it (as the reconciliation's)
        owner = lambda: TopicPartition(self.topics.training_posts, 0) in self.assigned  # noqa: E731
        try:
            await Housekeeping(self.settings, store, owner, self._sleep, self._stopping, self._chores,
                               compaction_scope=self._compaction_scope, writes=self._lock).run()
        except asyncio.CancelledError:
            raise
        except Exception:  # never silently: ConsentryVacuumOverdue would be the only sign
            metrics.ERRORS.labels("housekeeping").inc()
            log.exception("the sink's housekeeping stopped; no compaction or vacuum runs until the sink restarts")

    def _compaction_scope(self) -> tuple[list[int] | None, bool]:
        """The buckets this replica compacts, and whether it alone writes into them: with a bucket
        count that is a multiple of training.posts' partitions, bucket % partitions is the home
        partition, so each replica compacts the buckets of its own partitions (a rebalance waits
        for the worker's lock, which each bucket's compaction holds). Otherwise every replica
        writes every bucket: the owner of partition 0 compacts them all, and the files of a
        compaction a purge overtook wait for the orphan grace."""
        owned = {tp.partition for tp in self.assigned if tp.topic == self.topics.training_posts}
        partitions = len(self.consumer.partitions_for_topic(self.topics.training_posts) or ())
        buckets = self.writer.store.buckets
        if partitions and buckets % partitions == 0:
            return [b for b in range(buckets) if b % partitions in owned], True
        return (None, False) if 0 in owned else ([], False)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=max(seconds, 0.01))
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ the skeleton's hooks

    async def on_assigned(self, partitions: set[TopicPartition]) -> bool:
        await self._load_applied(partitions)
        return True  # loaded here: read them at once

    async def handle(self, batch: Batch) -> int:
        """Gather the batch; what the table already holds (below its recorded positions) is
        only re-confirmed, never applied again."""
        before = len(self._values)
        for tp, records in batch.items():
            applied = self._applied.get(tp, 0)
            if records[0].offset < applied:
                self._replayed.extend(r.value for r in records if r.offset < applied)
                self._values.extend(r.value for r in records if r.offset >= applied)
            else:
                self._values.extend(r.value for r in records)
            self._offsets[tp] = records[-1].offset + 1
            self._last_ts[tp] = records[-1].timestamp
            for record in records:
                if record.headers:  # rare: a purge marker of a traced objection (consentry/tracing.py)
                    self._note_trace(record.value, record.headers)
        return len(self._values) - before

    def _note_trace(self, value: bytes | None, headers: Any) -> None:
        parent = tracing.context_from(headers)
        if parent is not None:
            message = parse_training_message(value)
            if type(message) is PurgeMarker:
                self._traced[message.user_id] = parent

    async def refresh_gauges(self) -> None:
        """Table size and vacuum record: at most every sink_stats_seconds, not per batch."""
        await self._refresh_store_gauges()

    async def _refresh_store_gauges(self) -> None:
        """Metadata reads only: the table's add actions and the vacuum record."""
        store = self.writer.store
        try:
            stats = await asyncio.to_thread(store.stats)
            record = await asyncio.to_thread(store.vacuum_record)
            reconciled = await asyncio.to_thread(store.reconcile_record)
        except Exception:
            metrics.ERRORS.labels("stats").inc()
            log.warning("could not read the training store's metadata for the gauges", exc_info=True)
            return
        metrics.TABLE_VERSION.set(stats.version)
        metrics.TABLE_BYTES.set(stats.live_bytes)
        metrics.TABLE_FILES.set(stats.live_files)
        if reconciled is not None:
            metrics.RECONCILIATION.record = reconciled
        if record is not None:
            metrics.VACUUM_RUNS.runs = record.runs
            metrics.LAST_VACUUM.set(record.last_ended_at_us / 1e6)
            metrics.LAST_VACUUM_FILES.set(record.last_files_removed)

    async def flush(self) -> Flushed:
        """Apply the pending batch to the store and confirm its purges; the skeleton then
        commits its offsets."""
        if not self._values and not self._offsets:
            return Flushed({})
        values, self._values = self._values, []
        replayed, self._replayed = self._replayed, []
        offsets, self._offsets = self._offsets, {}
        plan = plan_batch([parse_training_message(v) for v in values])
        # Only forward: a batch made only of replayed messages must not lower a position.
        positions = {}
        for tp, offset in offsets.items():
            if offset > self._applied.get(tp, 0):
                positions[self._stream(tp)] = offset
                positions[self._stream(tp) + "@timestamp"] = self._last_ts[tp]
        for invalid in plan.invalid:
            log.error("skipping unreadable training.posts message: %s", invalid.reason)
            metrics.INVALID.labels(invalid.code).inc()
        started = time.monotonic()
        started_ns = time.time_ns()
        # The purges first, in their own commit, and confirmed at once: the batch's
        # de-duplication look-up (it reads the files of the batch's buckets, so it grows with the
        # table) and its append come after, and a purge must not wait for them (issue 16).
        try:
            purged = await asyncio.to_thread(self.writer.purge, plan, positions)
        except Exception:
            metrics.ERRORS.labels("store").inc()
            log.exception("the training store refused the purges of a batch of %d messages (%d purges): it is read again", len(values), len(plan.purges))
            raise  # offsets stay uncommitted: the batch is replayed after restart
        purge_seconds = time.monotonic() - started
        if plan.purges:
            metrics.STAGE_SECONDS.labels("purge").observe(purge_seconds)
            failpoints.hit("sink.after_purge")
        await self._confirm_purges(plan, replayed, purged, started_ns)
        confirmed_seconds = time.monotonic() - started
        try:
            applied = await asyncio.to_thread(self.writer.append, plan, positions, purged)
        except Exception:
            metrics.ERRORS.labels("store").inc()
            log.exception("the training store refused a batch of %d messages (%d purges): it is read again", len(values), len(plan.purges))
            raise  # offsets stay uncommitted: the batch is replayed after restart (its purges re-confirmed)
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        metrics.COMMITS.inc()
        metrics.APPENDED.inc(applied.appended)
        metrics.DUPLICATES.inc(applied.duplicates)
        for stage, seconds in applied.seconds.items():
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        failpoints.hit("sink.after_store")
        if plan.purges:
            oldest = min(p.marked_at_us for p in plan.purges.values())
            log.info("purged %d users (%d rows) from a batch of %d messages: delete %.2fs, confirmed after %.2fs, the oldest marker "
                     "%.1fs after it was written; then de-duplication look-up %.2fs, append %.2fs", len(plan.purges),
                     sum(applied.purged_rows.values()), len(values), purge_seconds, confirmed_seconds,
                     (started_ns // 1000 - oldest) / 1e6 + confirmed_seconds, applied.seconds["dedupe"], applied.seconds["append"])
        metrics.TABLE_VERSION.set(await asyncio.to_thread(self.writer.store.version))
        return Flushed(offsets)  # committed at once: the store has it (failpoint sink.before_commit)

    async def _confirm_purges(self, plan: Plan, replayed: list[bytes], purged: Purged, started_ns: int) -> None:
        """The purged receipts of the batch's purges (committed by `purged`), and of those a
        previous process committed but may not have confirmed (`replayed`: the consent table keeps
        the first stamp; how many rows they removed is not known)."""
        confirm = [(purge, None) for purge in plan_batch([parse_training_message(v) for v in replayed]).purges.values()] if replayed else []
        if replayed:
            log.info("skipped %d messages already applied to the table; re-confirming %d purges", len(replayed), len(confirm))
        removed = purged_rows(plan, purged)
        confirm += [(purge, removed.get(purge.user_id, 0)) for purge in plan.purges.values()]
        trained_on = await self._runs_that_read(purged) if purged.version is not None else {}
        if not confirm:
            return
        spans: list[Any] = []
        at = now_us()
        if any(removed.values()):
            metrics.LAST_PURGE.set(at / 1e6)
        for purge, rows in confirm:
            if rows is not None:
                metrics.PURGES.inc()
                metrics.ROWS_PURGED.inc(rows)
            runs = trained_on.get(purge.user_id, ()) if rows is not None else None
            version = purged.version if rows else None  # this batch's delete held the user's rows
            receipt = Receipt(PURGED, purge.user_id, purge.objection_ids, at, rows, purge.marked_at_us, runs, version)
            partition = home_partition(purge.user_id, self.settings.partitions)
            if runs:
                metrics.TRAINED_ON.inc()
            for run_id in runs or ():  # GET /v1/admin/runs/{run_id}
                self.sender.append(
                    self.topics.run_users, home_partition(run_id, self.settings.partitions), run_user_key(run_id, purge.user_id),
                    encode_run_user(run_id, purge.user_id, purge.objection_ids, at, purged.version or 0),
                )
            headers = self._purge_traced(purge.user_id, purge.objection_ids, rows, partition, started_ns, spans)
            self.sender.append(self.topics.receipts, partition, purge.user_id.encode(), encode_receipt(receipt), headers)
        try:
            await self.sender.flush()
        finally:
            for span in spans:
                span.end()

    async def _runs_that_read(self, purged: Purged) -> dict[str, tuple[str, ...]]:
        """Per purged user, the training runs that read a version still holding their rows, from
        every lineage record published before the delete's commit (read now, after it)."""
        delay = 0.5
        while True:
            try:
                await self.lineage.catch_up()
                break
            except Exception:
                metrics.ERRORS.labels("lineage").inc()
                if self._stopping.is_set():
                    raise  # the batch is read again after restart (its purges re-confirmed)
                log.warning("could not read consentry.lineage to its end: the purge receipts wait (retrying in %.1fs)", delay, exc_info=True)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
        margin_us = int(self.settings.lineage_margin_s * 1_000_000)
        reads = self.lineage.reads
        return {
            user: runs_that_read(reads, purged.version, first, margin_us)
            for user, first in purged.first_ingested_us.items()
        }

    def _purge_traced(self, user: str, objection_ids: tuple[str, ...], rows: int | None, partition: int, started_ns: int, spans: list[Any]) -> Any:
        """Log one user's purge; with a traced marker, a sink.purge span (from the store's commit to
        the receipt's acknowledgement) whose context the receipt carries. Returns the receipt's headers."""
        parent = self._traced.pop(user, None)
        where = ids(user_id=user, topic=self.topics.receipts, partition=partition)
        what = "purged" if rows is not None else "re-confirmed the purge of"
        if parent is None:
            log.info("%s %s (%s rows)", what, ",".join(objection_ids), "?" if rows is None else rows, extra=where)
            return ()
        span = tracing.start_span(
            "sink.purge", parent, kind=SpanKind.CONSUMER, start_time=started_ns, objection_ids=",".join(objection_ids),
            rows_purged=rows, user=user_ref(user),
        )
        spans.append(span)
        with tracing.use_span(span):
            log.info("%s %s (%s rows)", what, ",".join(objection_ids), "?" if rows is None else rows, extra=where)
            return tracing.headers()

    def _stream(self, tp: TopicPartition) -> str:
        """The name under which the table records how far this partition is applied."""
        return f"consentry-sink:{tp.topic}:{tp.partition}"

    async def _load_applied(self, assigned: set[TopicPartition]) -> None:
        """Where to read each partition from (services.sink.resume): the table's recorded
        positions, trusted only where the partition still holds the record they end with (same
        timestamp: a topic deleted and created again starts over at offset 0), against the
        group's committed offsets and the oldest offset retention left."""
        store = self.writer.store
        recorded: dict[TopicPartition, tuple[int, int | None]] = {}
        for tp in assigned:
            position = await asyncio.to_thread(store.applied_position, self._stream(tp))
            if position:
                recorded[tp] = (position, await asyncio.to_thread(store.applied_position, self._stream(tp) + "@timestamp"))
        starts = await self.consumer.beginning_offsets(list(assigned)) if assigned else {}
        committed = {tp: await self.consumer.committed(tp) for tp in assigned}
        checkable = {tp: p - 1 for tp, (p, _) in recorded.items() if p - 1 >= starts[tp]}
        found = await record_timestamps(client_options(self.settings), checkable)
        self._applied = {}
        for tp in sorted(assigned):
            table = recorded.get(tp)
            verified = None if table is None or tp not in checkable else found.get(tp) == table[1]
            resume = resume_point(table[0] if table else None, verified, committed[tp], starts[tp])
            self._report(tp, resume, table[0] if table else None, committed[tp], starts[tp])
            if resume.applied:
                self._applied[tp] = resume.applied
            if resume.seek is not None:
                self.consumer.seek(tp, resume.seek)

    def _report(self, tp: TopicPartition, resume: Resume, table: int | None, committed: int | None, start: int) -> None:
        where = f"{tp.topic}[{tp.partition}]"
        if resume.reason == Reason.RECREATED_TOPIC:
            log.warning("%s does not hold the record the table says it applied last (offset %d): the topic was "
                        "created again; applying it from the consumer group's position", where, (table or 0) - 1)
        elif resume.reason == Reason.REWIND:
            metrics.REWINDS.inc()
            log.warning("%s: the table is behind the consumer group (table at offset %d, group at %s): restored from a "
                        "backup? replaying %d records from the table's position", where, table, committed, (committed or 0) - (table or 0))
        elif resume.reason == Reason.REFILL:
            metrics.REWINDS.inc()
            log.warning("%s: the table records nothing of this partition but the consumer group is at offset %s: the table "
                        "was created again? replaying from the oldest record held (offset %d)", where, committed, start)
        if resume.missing:
            metrics.UNREPLAYABLE.inc(resume.missing)
            log.error("%s: the table needs %d records (offsets %d to %d) that the topic no longer holds (retention): "
                      "their posts are lost to training and their purge markers cannot be applied again. Run `consentry "
                      "reconcile` now (docs/operations.md, ConsentrySinkReplayGap)", where, resume.missing,
                      start - resume.missing, start - 1)
