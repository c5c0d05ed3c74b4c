"""Consumer lag measured from outside the consumer groups: each group's committed offsets
against the partitions' high watermarks, read by a separate client (the gateway, at each
scrape of its /metrics). A worker reports its own lag (`consentry_consumer_lag`) only while it
runs; this one shows a dead or stuck group's lag growing.

`consentry_group_lag{group,topic,partition}`: high watermark minus the group's committed
offset (minus the log start when the group has committed nothing there yet).
`consentry_group_lag_up`: 1 when the last read worked, 0 when not (the broker or a group
coordinator did not answer: see the gateway's log).

How: the committed offsets with an OffsetFetch request to the group's coordinator, naming
the partitions (version 1+). Not aiokafka's admin `list_consumer_group_offsets`: it asks for
all partitions (a null list, OffsetFetch v2+), and the embedded broker (Tansu 0.6.0) closes the
connection on that; Apache Kafka answers both. The high watermarks with a group-less
consumer's `end_offsets` (ListOffsets) on Kafka; on the embedded broker, whose ListOffsets is
wrong after a batch of several records, from a fetch's high watermark
(`consentry.patches.true_end_offsets`). The log starts with `beginning_offsets`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import CoordinationType
from aiokafka.protocol.commit import OffsetFetchRequest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from consentry import patches
from consentry.kafka import client_options
from consentry.settings import CommonSettings

log = logging.getLogger(__name__)

NO_OFFSET = -1


def watched_groups(settings: CommonSettings) -> dict[str, tuple[str, ...]]:
    """group id -> the topics it consumes and commits (consent, ingest, the sink)."""
    topics = settings.topics
    return {
        topics.group("consent"): (topics.objections, topics.notices, topics.receipts),
        topics.group("ingest"): (topics.posts, topics.posts_by_user),
        topics.group("sink"): (topics.training_posts,),
    }


def group_lag(highwater: Mapping[TopicPartition, int], start: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """The lag per partition: records after the committed offset (or after the log start)."""
    out = {}
    for tp, end in highwater.items():
        position = committed.get(tp, NO_OFFSET)
        if position < 0:
            position = start.get(tp, 0)
        out[tp] = max(end - position, 0)
    return out


class GroupLagReader:
    """Reads every watched group's lag; one read at a time, cached for `min_interval_s`."""

    def __init__(self, settings: CommonSettings, timeout_s: float = 3.0, min_interval_s: float = 5.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._last: tuple[float, bytes] | None = None

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None, enable_auto_commit=False, client_id="consentry-group-lag")
            try:
                await consumer.start()
            except Exception:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def read(self) -> dict[str, dict[TopicPartition, int]]:
        """group -> {partition: lag}. Raises when the broker or a coordinator does not answer."""
        consumer = await self._client()
        groups = watched_groups(self.settings)
        wanted: dict[str, list[TopicPartition]] = {}
        for group, topics in groups.items():
            tps = []
            for topic in topics:
                partitions = consumer.partitions_for_topic(topic)
                if partitions is None:
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(topic) or set()
                tps += [TopicPartition(topic, p) for p in sorted(partitions)]
            wanted[group] = tps
        every = sorted({tp for tps in wanted.values() for tp in tps})
        if self.settings.on_embedded_broker:
            # Tansu 0.6.0's ListOffsets(latest) is wrong after a multi-record batch (consentry.patches).
            highwater = await patches.true_end_offsets(client_options(self.settings), every)
        else:
            highwater = await consumer.end_offsets(every) if every else {}
        start = await consumer.beginning_offsets(every) if every else {}
        out = {}
        for group, tps in wanted.items():
            committed = await committed_offsets(consumer, group, tps)
            out[group] = group_lag({tp: highwater[tp] for tp in tps}, start, committed)
        return out

    async def metrics_text(self) -> bytes:
        """The two gauges in Prometheus text; read at most every `min_interval_s`."""
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.min_interval_s:
                return self._last[1]
            # Metric families, not Gauges: a Gauge would also land in the gateway's multiprocess files.
            lag = GaugeMetricFamily(
                "consentry_group_lag", "Records after a consumer group's committed offset, read from outside the group", labels=["group", "topic", "partition"]
            )
            up = GaugeMetricFamily("consentry_group_lag_up", "1 when the groups' committed offsets and the high watermarks could be read")
            try:
                lags = await asyncio.wait_for(self.read(), timeout=self.timeout_s)
            except Exception as exc:
                log.warning("could not read the consumer groups' lag (%s: %s)", type(exc).__name__, exc)
                up.add_metric([], 0)
                await self.close()  # a new connection next time
            else:
                up.add_metric([], 1)
                for group, partitions in lags.items():
                    for tp, value in partitions.items():
                        lag.add_metric([group, tp.topic, str(tp.partition)], value)
            registry = CollectorRegistry()
            registry.register(_Families([lag, up]))
            text = generate_latest(registry)
            self._last = (time.monotonic(), text)
            return text


class _Families(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        return iter(self.families)


async def committed_offsets(consumer: AIOKafkaConsumer, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offsets (NO_OFFSET where none), by OffsetFetch to its coordinator."""
    if not tps:
        return {}
    client: Any = consumer._client
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    node = await client.coordinator_lookup(CoordinationType.GROUP, group)
    response = await client.send(node, OffsetFetchRequest(group, list(by_topic.items())))
    error = getattr(response, "error_code", 0)
    if error:
        raise RuntimeError(f"OffsetFetch for group {group} answered error {error}")
    out = {tp: NO_OFFSET for tp in tps}
    for topic, partitions in response.topics:
        for partition, offset, _metadata, error_code in partitions:
            if error_code == 0:
                out[TopicPartition(topic, partition)] = offset
    return out
