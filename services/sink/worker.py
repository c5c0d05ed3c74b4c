"""The sink worker: batches training.posts (bounded by size and time) into the store."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from consentry.events import PURGED, Receipt, encode_receipt
from consentry.kafka import BatchSender, producer_options
from consentry.lag import LagGauge, lag_of
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from consentry.web import StatusServer
from services.sink import metrics
from services.sink.plan import plan_batch
from services.sink.settings import SinkSettings
from services.sink.store import DeltaTrainingStore, TrainingStore
from services.sink.writer import IdempotentWriter

log = logging.getLogger(__name__)


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


class SinkWorker:
    def __init__(self, settings: SinkSettings, store: TrainingStore | None = None) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._store = store
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._assigned: set[TopicPartition] = set()
        self._values: list[bytes] = []
        self._offsets: dict[TopicPartition, int] = {}
        self._first_at: float | None = None
        self._consumed: dict[TopicPartition, int] = {}  # next offset to read, for the lag gauge
        self._lag = LagGauge("sink")
        self._stats_at = float("-inf")

    async def start(self) -> None:
        s = self.settings
        store = self._store or await asyncio.to_thread(DeltaTrainingStore, s.store_uri)
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
                    self._values.extend(r.value for r in records)
                    self._offsets[tp] = self._consumed[tp] = records[-1].offset + 1
                if self._values and self._first_at is None:
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
        offsets, self._offsets = self._offsets, {}
        self._first_at = None
        plan = plan_batch(values)
        for invalid in plan.invalid:
            log.error("skipping unreadable training.posts message: %s", invalid.reason)
            metrics.INVALID.labels(invalid.code).inc()
        started = time.monotonic()
        try:
            applied = await asyncio.to_thread(self.writer.apply, plan)
        except Exception:
            metrics.ERRORS.labels("store").inc()
            raise  # offsets stay uncommitted: the batch is replayed after restart
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        metrics.COMMITS.inc()
        metrics.APPENDED.inc(applied.appended)
        metrics.DUPLICATES.inc(applied.duplicates)
        if plan.purges:
            at = now_us()
            if any(applied.purged_rows.values()):
                metrics.LAST_PURGE.set(at / 1e6)
            for purge in plan.purges.values():
                rows = applied.purged_rows.get(purge.user_id, 0)
                metrics.PURGES.inc()
                metrics.ROWS_PURGED.inc(rows)
                receipt = Receipt(PURGED, purge.user_id, purge.objection_ids, at, rows, purge.marked_at_us)
                partition = home_partition(purge.user_id, self.settings.partitions)
                self.sender.append(self.topics.receipts, partition, purge.user_id.encode(), encode_receipt(receipt))
            await self.sender.flush()
            log.info("purged %d users (%d rows)", len(plan.purges), sum(applied.purged_rows.values()))
        metrics.TABLE_VERSION.set(await asyncio.to_thread(self.writer.store.version))
        if offsets:
            await self.consumer.commit(offsets)
