"""A steady post load: RATE posts per second for DURATION seconds, keyed by user, in its
own process (as an upstream platform would publish them).

    python -m bench.loadgen BOOTSTRAP TOPIC RATE DURATION USERS [PARTITIONS]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import PARTITIONS, emit
from consentry.kafka import BatchSender
from consentry.partitioning import home_partition
from consentry.timeutil import format_rfc3339, now_us

TICK = 0.01


async def main(bootstrap: str, topic: str, rate: float, duration: float, users: int, partitions: int = PARTITIONS) -> dict:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    sender = BatchSender(producer)
    rng = random.Random(7)
    names = [f"user-{i:06d}" for i in range(users)]
    homes = [home_partition(n, partitions) for n in names]
    sent = 0
    started = time.monotonic()
    lagging = 0.0
    try:
        while (elapsed := time.monotonic() - started) < duration:
            due = int(rate * elapsed) - sent
            created = format_rfc3339(now_us())
            for _ in range(max(due, 0)):
                i = rng.randrange(users)
                value = orjson.dumps({
                    "post_id": f"load-{sent:010d}", "user_id": names[i], "created_at": created, "visibility": "public",
                    "text": "le la les un une des et ou mais donc car ni que", "lang": "fr", "country": "FR", "author_is_minor": False,
                })
                sender.append(topic, homes[i], names[i].encode(), value)
                sent += 1
            await sender.send()
            lagging = max(lagging, due / rate) if due > rate * TICK * 5 else lagging
            await asyncio.sleep(TICK)
        await sender.flush()
    finally:
        await producer.stop()
    seconds = time.monotonic() - started
    return {"sent": sent, "seconds": seconds, "rate": sent / seconds, "max_backlog_s": lagging}


if __name__ == "__main__":
    bootstrap, topic, rate, duration, users = sys.argv[1:6]
    partitions = int(sys.argv[6]) if len(sys.argv) > 6 else PARTITIONS
    emit(asyncio.run(main(bootstrap, topic, float(rate), float(duration), int(users), partitions)))
