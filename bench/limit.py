"""1. The limit: raw aiokafka consume -> produce pass-through, no processing at all.

Batched `getmany`, one `send_batch` per partition and poll, offsets committed after the
acks: the least a correct forwarder on this broker must do.

    python -m bench.limit BOOTSTRAP SOURCE SINK EXPECTED
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import emit


async def main(bootstrap: str, source: str, sink: str, expected: int) -> dict:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"{source}-limit", enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20, fetch_max_wait_ms=50,
        session_timeout_ms=3000, heartbeat_interval_ms=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024, max_request_size=4 << 20)
    await producer.start()
    await consumer.start()
    seen = 0
    started = None
    cpu_started = 0.0
    previous = None
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if not batch:
                continue
            if started is None:
                started, cpu_started = time.perf_counter(), time.process_time()
            futures = []
            for tp, records in batch.items():
                builder = producer.create_batch()
                for record in records:
                    if builder.append(key=record.key, value=record.value, timestamp=None) is None:
                        futures.append(await producer.send_batch(builder, sink, partition=tp.partition))
                        builder = producer.create_batch()
                        builder.append(key=record.key, value=record.value, timestamp=None)
                futures.append(await producer.send_batch(builder, sink, partition=tp.partition))
                seen += len(records)
            # One batch in flight while the next is read (as ingest does): commit a batch's
            # offsets only once the broker acknowledged it.
            if previous is not None:
                await asyncio.gather(*previous[0])
                await consumer.commit(previous[1])
            previous = (futures, {tp: records[-1].offset + 1 for tp, records in batch.items()})
        if previous is not None:
            await asyncio.gather(*previous[0])
            await consumer.commit(previous[1])
        seconds = time.perf_counter() - (started or time.perf_counter())
        cpu_seconds = time.process_time() - cpu_started
    finally:
        await consumer.stop()
        await producer.stop()
    return {"posts": seen, "seconds": seconds, "rate": seen / seconds, "cpu_seconds": cpu_seconds}


if __name__ == "__main__":
    bootstrap, source, sink, expected = sys.argv[1:5]
    emit(asyncio.run(main(bootstrap, source, sink, int(expected))))
