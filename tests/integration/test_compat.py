"""The embedded broker's defects, shown on the real broker, and what consentry.compat does."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consentry import compat
from consentry.settings import CommonSettings


@pytest.fixture
def tansu(broker: tuple[str, str]) -> str:
    bootstrap, flavor = broker
    if flavor != "tansu":
        pytest.skip("shows a defect of the embedded broker")
    return bootstrap


async def produce_one_batch(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(count):
            batch.append(key=b"k", value=b"v%d" % i, timestamp=None)
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def test_end_offsets_after_a_multi_record_batch(tansu: str) -> None:
    topic = f"compat-{uuid.uuid4().hex[:8]}"
    await produce_one_batch(tansu, topic, 5)
    tp = TopicPartition(topic, 0)

    consumer = AIOKafkaConsumer(bootstrap_servers=tansu, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        # The defect: ListOffsets answers the last batch's base offset + 1, not 5.
        assert (await consumer.end_offsets([tp]))[tp] == 1
    finally:
        await consumer.stop()

    # The fix: the fetch's high watermark.
    assert await compat.true_end_offsets(tansu, [tp]) == {tp: 5}


def test_workarounds_switch_on_only_for_the_embedded_broker() -> None:
    assert CommonSettings(kafka_bootstrap_servers=None).on_embedded_broker
    assert not CommonSettings(kafka_bootstrap_servers="kafka:9092").on_embedded_broker
    assert CommonSettings(kafka_bootstrap_servers="127.0.0.1:9092", broker_flavor="tansu").on_embedded_broker
    assert compat.idempotent_producer_supported(CommonSettings(kafka_bootstrap_servers="kafka:9092"))
    assert not compat.idempotent_producer_supported(CommonSettings(kafka_bootstrap_servers=None))


async def test_idempotent_producer_fails_on_the_embedded_broker(tansu: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=tansu, enable_idempotence=True, request_timeout_ms=3000)
    with pytest.raises(Exception):
        await producer.start()
        await producer.send_and_wait(f"compat-{uuid.uuid4().hex[:8]}", b"v", key=b"k")
    await producer.stop()
