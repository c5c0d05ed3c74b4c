"""Small real-broker helpers for tests: create a topic, produce, read a whole topic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


Connection = str | Mapping[str, Any]  # a PLAINTEXT bootstrap string, or consentry.kafka.client_options(settings)


def connect(connection: Connection) -> dict[str, Any]:
    return {"bootstrap_servers": connection} if isinstance(connection, str) else dict(connection)


async def create_topic(bootstrap: str, suffix: str, partitions: int = 1) -> str:
    """A new topic of a unique name ending in `suffix`; returns the name."""
    name = f"t{uuid.uuid4().hex[:10]}-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def produce(connection: Connection, topic: str, messages: Iterable[tuple[bytes | None, bytes]], partition: int | None = None) -> None:
    producer = AIOKafkaProducer(**connect(connection), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=partition) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_posts(bootstrap: str, topic: str, posts: Iterable[dict]) -> None:
    asyncio.run(produce(bootstrap, topic, [(p["user_id"].encode(), orjson.dumps(p)) for p in posts]))


async def read_all(connection: Connection, topic: str, timeout: float = 10.0) -> list:
    """Every record of `topic`, up to the high watermark seen after a first fetch."""
    consumer = AIOKafkaConsumer(**connect(connection), enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata for every topic
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done: set[TopicPartition] = set()
        while len(done) < len(tps) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for tp, items in batch.items():
                records.extend(items)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    done.add(tp)
        return records
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str) -> list:
    return asyncio.run(read_all(bootstrap, topic))
