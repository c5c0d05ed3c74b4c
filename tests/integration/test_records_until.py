"""A reader without a group reads a topic to the end it had when it looked
(`consentry.kafka.records_until`), and the same consumer reads on from there the next time.

The sink's lineage reader does exactly that before every purge receipt: it catches up with
`consentry.lineage`, then names the training runs that read the purged users' rows. A fetch
returns whatever the broker holds, so it can bring records appended after the end was taken;
those must be read the next time, not lost with the fetch (a lost lineage record is a training
run missing from a purge receipt)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consentry.kafka import records_until
from tests.support.kafka import create_topic


async def test_records_fetched_past_the_end_are_read_the_next_time(broker: tuple[str, str]) -> None:
    bootstrap, _flavor = broker
    topic = await create_topic(bootstrap, "lineage")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, f"read-{n}".encode(), partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        # The end as it was when the reader looked: 4 records. The other 6 were appended after,
        # and one fetch brings all 10.
        first = [r.value async for r in records_until(consumer, {tp: 4}, 30, topic)]
        second = [r.value async for r in records_until(consumer, {tp: 10}, 30, topic)]
    finally:
        await consumer.stop()

    assert first == [f"read-{n}".encode() for n in range(4)], "records past the end it was given"
    assert second == [f"read-{n}".encode() for n in range(4, 10)], (
        "the records one fetch brought past the end were lost to the next read"
    )
