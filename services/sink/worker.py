"""The sink worker: batches training.posts (bounded by size and time) into the store."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from consentry import failpoints
from consentry.domain.model import PURGED, Receipt
from consentry.wire import encode_receipt, parse_training_message
from consentry.kafka import BatchSender, producer_options
from consentry.lag import LagGauge, lag_of
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from consentry.web import StatusServer
from services.sink import metrics
from consentry.domain.purge import plan_batch
from services.sink.settings import SinkSettings
from services.sink.store import DeltaTrainingStore, TrainingStore
from services.sink.writer import IdempotentWriter

log = logging.getLogger(__name__)


async def record_timestamps(bootstrap: str, wanted: dict[TopicPartition, int], timeout: float = 10.0) -> dict[TopicPartition, int]:
    """The timestamp of the record at each (partition, offset), where the partition has it."""
    if not wanted:
        return {}
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50, client_id="consentry-sink-probe")
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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: SinkWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.worker._lock:
            await self.worker._flush()
            self.worker._assigned = set()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.worker._lock:
            self.worker._assigned = set(assigned)
            self.worker._consumed = {}
            await self.worker._load_applied(assigned)


class SinkWorker:
    def __init__(self, settings: SinkSettings, store: TrainingStore | None = None) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._store = store
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._assigned: set[TopicPartition] = set()
        self._values: list[bytes] = []
        self._replayed: list[bytes] = []  # read again but already in the table (see writer.py)
        self._applied: dict[TopicPartition, int] = {}
        self._offsets: dict[TopicPartition, int] = {}
        self._last_ts: dict[TopicPartition, int] = {}  # timestamp of the last record read, per partition
        self._first_at: float | None = None
        self._consumed: dict[TopicPartition, int] = {}  # next offset to read, for the lag gauge
        self._lag = LagGauge("sink")
        self._stats_at = float("-inf")

    async def start(self) -> None:
        s = self.settings
        store = self._store or await asyncio.to_thread(DeltaTrainingStore, s.store_uri)
        if isinstance(store, DeltaTrainingStore):
            # What a crashed predecessor wrote but never committed (maybe posts since purged).
            orphans = await asyncio.to_thread(store.remove_orphans)
            if orphans:
                log.info("removed %d uncommitted files left by a previous run", orphans)
        self.writer = await asyncio.to_thread(IdempotentWriter, store)
        await self._refresh_store_gauges()
        log.info("training store at %s: %d posts", getattr(store, "uri", "memory"), len(self.writer.index))
        self.producer = AIOKafkaProducer(**producer_options(s), linger_ms=5)
        await self.producer.start()
        self.sender = BatchSender(self.producer)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=self.topics.group("sink"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 << 20,
            # A Delta commit can outlast the default poll interval on a big batch.
            max_poll_interval_ms=600_000,
            client_id="consentry-sink",
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topics.training_posts], listener=_Rebalance(self))
        self.status = StatusServer(s.sink_host, s.sink_port, self.readiness)
        await self.status.start()

    def readiness(self) -> tuple[bool, str]:
        if not self._assigned:
            return False, "waiting for a partition assignment"
        return True, f"writing {len(self._assigned)} partitions"

    async def stop(self) -> None:
        self._stopping.set()
        async with self._lock:
            try:
                await self._flush()
            except Exception:
                log.exception("final flush failed; the batch is re-read on restart")
        for closer in (self.consumer.stop, self.producer.stop, self.status.stop):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping")

    async def run(self) -> None:
        s = self.settings
        while not self._stopping.is_set():
            wait = s.sink_flush_seconds
            if self._first_at is not None:
                wait = max(0.0, self._first_at + s.sink_flush_seconds - time.monotonic())
            # Outside the lock: before the first assignment getmany waits for one, and the
            # rebalance listener that brings it needs the lock.
            batch = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=s.sink_batch_rows)
            async with self._lock:
                for tp, records in batch.items():
                    if tp not in self._assigned:
                        continue  # fetched before a rebalance took it away
                    applied = self._applied.get(tp, 0)
                    if records[0].offset < applied:
                        self._replayed.extend(r.value for r in records if r.offset < applied)
                        self._values.extend(r.value for r in records if r.offset >= applied)
                    else:
                        self._values.extend(r.value for r in records)
                    self._offsets[tp] = self._consumed[tp] = records[-1].offset + 1
                    self._last_ts[tp] = records[-1].timestamp
                if (self._values or self._replayed) and self._first_at is None:
                    self._first_at = time.monotonic()
                due = self._first_at is not None and time.monotonic() - self._first_at >= s.sink_flush_seconds
                if len(self._values) >= s.sink_batch_rows or due:
                    await self._flush()
                if time.monotonic() - self._stats_at >= s.sink_stats_seconds:
                    await self._refresh_gauges()

    async def _refresh_gauges(self) -> None:
        """Lag, table size and vacuum record: at most every sink_stats_seconds, not per batch."""
        self._stats_at = time.monotonic()
        self._lag.update({(tp.topic, tp.partition): lag_of(self.consumer.highwater(tp), self._consumed.get(tp)) for tp in self._assigned})
        await self._refresh_store_gauges()

    async def _refresh_store_gauges(self) -> None:
        """Metadata reads only: the table's add actions and the vacuum record."""
        store = self.writer.store
        try:
            stats = await asyncio.to_thread(store.stats)
            record = await asyncio.to_thread(store.vacuum_record)
        except Exception:
            metrics.ERRORS.labels("stats").inc()
            log.warning("could not read the training store's metadata for the gauges", exc_info=True)
            return
        metrics.TABLE_VERSION.set(stats.version)
        metrics.TABLE_BYTES.set(stats.live_bytes)
        metrics.TABLE_FILES.set(stats.live_files)
        if record is not None:
            metrics.VACUUM_RUNS.runs = record.runs
            metrics.LAST_VACUUM.set(record.last_ended_at_us / 1e6)
            metrics.LAST_VACUUM_FILES.set(record.last_files_removed)

    async def _flush(self) -> None:
        """Apply the pending batch to the store, confirm its purges, then commit offsets."""
        if not self._values and not self._offsets:
            return
        values, self._values = self._values, []
        replayed, self._replayed = self._replayed, []
        offsets, self._offsets = self._offsets, {}
        self._first_at = None
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
        try:
            applied = await asyncio.to_thread(self.writer.apply, plan, positions)
        except Exception:
            metrics.ERRORS.labels("store").inc()
            raise  # offsets stay uncommitted: the batch is replayed after restart
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        metrics.COMMITS.inc()
        metrics.APPENDED.inc(applied.appended)
        metrics.DUPLICATES.inc(applied.duplicates)
        failpoints.hit("sink.after_store")
        if plan.purges:
            failpoints.hit("sink.after_purge")
        # Purges a previous process committed but may not have confirmed: confirm them again
        # (the consent table keeps the first stamp; how many rows they removed is not known).
        confirm = [(purge, None) for purge in plan_batch([parse_training_message(v) for v in replayed]).purges.values()] if replayed else []
        if replayed:
            log.info("skipped %d messages already applied to the table; re-confirming %d purges", len(replayed), len(confirm))
        confirm += [(purge, applied.purged_rows.get(purge.user_id, 0)) for purge in plan.purges.values()]
        if confirm:
            at = now_us()
            if any(applied.purged_rows.values()):
                metrics.LAST_PURGE.set(at / 1e6)
            for purge, rows in confirm:
                if rows is not None:
                    metrics.PURGES.inc()
                    metrics.ROWS_PURGED.inc(rows)
                receipt = Receipt(PURGED, purge.user_id, purge.objection_ids, at, rows, purge.marked_at_us)
                partition = home_partition(purge.user_id, self.settings.partitions)
                self.sender.append(self.topics.receipts, partition, purge.user_id.encode(), encode_receipt(receipt))
            await self.sender.flush()
            if plan.purges:
                log.info("purged %d users (%d rows)", len(plan.purges), sum(applied.purged_rows.values()))
        metrics.TABLE_VERSION.set(await asyncio.to_thread(self.writer.store.version))
        failpoints.hit("sink.before_commit")
        if offsets:
            await self.consumer.commit(offsets)

    def _stream(self, tp: TopicPartition) -> str:
        """The name under which the table records how far this partition is applied."""
        return f"consentry-sink:{tp.topic}:{tp.partition}"

    async def _load_applied(self, assigned: set[TopicPartition]) -> None:
        """Positions the table recorded, kept only where the partition still holds the record
        they end with (same timestamp): a topic deleted and created again (an embedded broker
        restarted empty, an operator's re-creation) starts over at offset 0."""
        store = self.writer.store
        recorded = {}
        for tp in assigned:
            position = await asyncio.to_thread(store.applied_position, self._stream(tp))
            if position:
                recorded[tp] = (position, await asyncio.to_thread(store.applied_position, self._stream(tp) + "@timestamp"))
        found = await record_timestamps(self.settings.bootstrap_servers, {tp: p - 1 for tp, (p, _) in recorded.items()})
        self._applied = {}
        for tp, (position, timestamp) in recorded.items():
            if found.get(tp) == timestamp:
                self._applied[tp] = position
            else:
                log.warning("%s[%d] does not hold the record the table says it applied last (offset %d): the topic was "
                            "created again; applying it from the consumer group's position", tp.topic, tp.partition, position - 1)
