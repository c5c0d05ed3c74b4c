"""The sink's copy of `consentry.lineage`: every snapshot a training run opened.

Read in full at start (no consumer group: every replica needs every run) and kept in memory,
one small `RunRead` per snapshot: a few thousand runs are a few hundred KB. Before the sink names
the runs on a purge receipt it catches up to the topic's end as it is once the purge's delete is
committed (consentry.training explains why that is enough), so a run whose record the broker
acknowledged before the delete is never missed.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from consentry.domain.lineage import RunRead
from consentry.domain.model import Invalid
from consentry.kafka import client_options, records_until
from consentry.patches import true_end_offsets
from consentry.settings import CommonSettings
from consentry.training import table_id
from consentry.wire import parse_run_read
from services.sink import metrics

log = logging.getLogger(__name__)


class LineageFollower:
    def __init__(self, settings: CommonSettings, store_uri: str) -> None:
        self.settings = settings
        self.table = table_id(store_uri)
        self.reads: list[RunRead] = []
        self._seen: set[tuple[str, int]] = set()
        self._other_tables: set[str] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def start(self, timeout: float = 60.0) -> None:
        topic = self.settings.topics.lineage
        self._consumer = AIOKafkaConsumer(
            **client_options(self.settings), enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=50, client_id="consentry-sink-lineage",
        )
        await self._consumer.start()
        await self._consumer.topics()  # fetches the cluster's metadata
        self._partitions = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
        if not self._partitions:
            raise RuntimeError(f"topic {topic} does not exist: run `consentry topics` (or `consentry up`)")
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        await self.catch_up(timeout)
        log.info("lineage: %d snapshots of %s read by training runs", len(self.reads), self.table)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def catch_up(self, timeout: float = 30.0) -> None:
        """Read every lineage record the topic holds now. Raises TimeoutError."""
        assert self._consumer is not None
        ends = await true_end_offsets(client_options(self.settings), self._partitions, timeout)
        async for record in records_until(self._consumer, ends, timeout, self.settings.topics.lineage):
            self._add(record.value)

    def _add(self, value: bytes | None) -> None:
        read = parse_run_read(value)
        if type(read) is Invalid:
            metrics.ERRORS.labels("lineage").inc()
            log.error("skipping an unreadable consentry.lineage record: %s", read.reason)
            return
        assert type(read) is RunRead
        if (read.run_id, read.version) in self._seen:
            return  # a read already known
        if read.table != self.table and read.table not in self._other_tables:
            # Counted all the same: the topic is this deployment's, and a URI spelt another way
            # (a relative path, another scheme) must not make a run that read the rows go unnamed.
            self._other_tables.add(read.table)
            log.warning("consentry.lineage names a table other than %s (%s): its runs are counted as reads of this one", self.table, read.table)
        self._seen.add((read.run_id, read.version))
        self.reads.append(read)
        metrics.LINEAGE_READS.set(len(self.reads))

