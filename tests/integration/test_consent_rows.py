"""The consent table's changelog records, a batch of rows at a time (services/consent/rows.py),
on the real broker: every row of a batch lands in its partition, in the order of the rows' last
writes, with its trace headers, and `write` returns the offset of each partition's last record
only once the broker has acknowledged them all."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from services.consent.rows import KafkaChangelog, StagedRows
from tests.support.kafka import create_topic, read_all


async def test_a_batch_of_rows_lands_in_order_with_headers_and_its_last_offsets(broker: tuple[str, str]) -> None:
    bootstrap, _flavor = broker
    topic = await create_topic(bootstrap, "consent-state", partitions=2)
    # Batches of at most 1 KiB: 30 rows of ~200 bytes need several per partition.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1024)
    await producer.start()
    try:
        changelog = KafkaChangelog(topic, lambda: producer, 1_000_000)
        rows = StagedRows()
        for n in range(30):
            rows.put(f"user-{n}".encode(), n % 2, None, [("traceparent", f"00-{n:032x}-{n + 1:016x}-01".encode())] if n % 3 == 0 else None)
        rows.put(b"user-4", 0, None, None)  # written again later in the batch: its record comes last
        for key, row in rows.items():
            row.value = b"x" * 180 + key
        first = await changelog.write(rows)
        again = await changelog.write(rows)  # a second batch follows the first
    finally:
        await producer.stop()

    records = await read_all(bootstrap, topic)
    by_partition = {p: [r for r in records if r.partition == p] for p in (0, 1)}
    expected = {p: [key for key, row in rows.items() if row.partition == p] for p in (0, 1)}
    for p in (0, 1):
        assert [r.key for r in by_partition[p]] == expected[p] * 2
        assert [r.value for r in by_partition[p]] == [b"x" * 180 + key for key in expected[p]] * 2
        assert first[p] == by_partition[p][len(expected[p]) - 1].offset
        assert again[p] == by_partition[p][-1].offset
    assert by_partition[0][-1].key == b"user-4"
    headers = {r.key: dict(r.headers) for r in records}
    assert headers[b"user-3"] == {"traceparent": f"00-{3:032x}-{4:016x}-01".encode()}
    assert headers[b"user-1"] == {}
