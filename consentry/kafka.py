"""Kafka plumbing shared by the services: topic creation, client options, batched sends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.producer.message_accumulator import BatchBuilder

from consentry.settings import CommonSettings
from consentry.topics import TopicSpec

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
MAX_REQUEST_BYTES = 4 << 20  # a 1 MiB post plus its envelope must fit in one request


class TopicLayoutError(RuntimeError):
    """A topic exists with a partition count that breaks co-partitioning by user."""


def producer_options(settings: CommonSettings) -> dict[str, Any]:
    """acks=all everywhere; idempotence where the broker supports it (see consentry.patches)."""
    from consentry import patches

    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "max_request_size": MAX_REQUEST_BYTES,
        "enable_idempotence": patches.idempotent_producer_supported(settings),
    }


async def partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    described = await admin.describe_topics(list(names))
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def ensure_topics(settings: CommonSettings, specs: list[TopicSpec] | None = None, replication: int = 1) -> dict[str, int]:
    """Create missing topics; check that every user-keyed topic has `settings.partitions`.

    `posts` belongs to upstream: any partition count is accepted there.
    """
    specs = specs if specs is not None else settings.topics.specs()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, settings.partitions, replication, topic_configs=dict(s.config)) for s in specs]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise TopicLayoutError(f"cannot create topic {name}: error {code} {message}")
        counts = await partition_counts(admin, [s.name for s in specs])
    finally:
        await admin.close()
    for spec in specs:
        if spec.user_keyed and counts.get(spec.name) != settings.partitions:
            raise TopicLayoutError(
                f"topic {spec.name} has {counts.get(spec.name)} partitions, expected "
                f"CONSENTRY_PARTITIONS={settings.partitions}: user-keyed topics must be co-partitioned"
            )
    return counts


async def wait_partitions(producer: AIOKafkaProducer, topic: str) -> int:
    return len(await producer.partitions_for(topic))


class BatchSender:
    """Accumulates records per (topic, partition) into producer batches and sends them.

    Records handed to one partition keep their order: batches are queued in the order they
    are sent and aiokafka has at most one request in flight per broker connection.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._batches: dict[tuple[str, int], list[BatchBuilder]] = {}
        self._futures: list[asyncio.Future[Any]] = []

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        batches = self._batches.get((topic, partition))
        if batches is None:
            batches = self._batches[(topic, partition)] = [self._producer.create_batch()]
        if batches[-1].append(key=key, value=value, timestamp=None) is None:
            batches.append(self._producer.create_batch())
            batches[-1].append(key=key, value=value, timestamp=None)  # an empty batch always takes one

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every accumulated batch to the producer, in order per partition; return the
        futures of what was handed over (the next `flush` waits for them too)."""
        pending, self._batches = self._batches, {}
        # Forget futures already acknowledged; keep failed ones for `flush` to raise.
        self._futures = [f for f in self._futures if not f.done() or f.cancelled() or f.exception() is not None]
        sent = []
        for (topic, partition), batches in pending.items():
            for batch in batches:
                sent.append(await self._producer.send_batch(batch, topic, partition=partition))
        self._futures.extend(sent)
        return sent

    async def flush(self) -> None:
        """Send everything and wait until the broker acknowledged all of it (raises on failure)."""
        await self.send()
        futures, self._futures = self._futures, []
        if futures:
            await asyncio.gather(*futures)
