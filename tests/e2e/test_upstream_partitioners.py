"""Upstream producers are not ours: whatever partitioner and partition count they use, every
post of a user is decided where that user's consent state lives."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from consentry.partitioning import home_partition
from consentry.scrape import total
from consentry.timeutil import format_rfc3339, now_us
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

USERS = [f"user-{i}" for i in range(12)]


def publish_with_librdkafka(system: System, posts: list[dict]) -> None:
    """confluent-kafka's default partitioner: CRC32 ('consistent_random'), not murmur2."""
    producer = Producer({"bootstrap.servers": system.bootstrap, "acks": "all", "enable.idempotence": False})
    for p in posts:
        producer.produce(system.topics.posts, key=p["user_id"].encode(), value=orjson.dumps(p))
    assert producer.flush(30) == 0


def posts_for(users: list[str], tag: str) -> list[dict]:
    return [
        {"post_id": f"{u}-{tag}", "user_id": u, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": f"{u} {tag}"}
        for u in users
    ]


@pytest.mark.parametrize("posts_partitions", [4, 3], ids=["same-count", "other-count"])
def test_posts_from_a_crc32_producer_are_filtered_like_any_other(system: System, posts_partitions: int) -> None:
    system.create_topics(posts_partitions=posts_partitions)
    system.start()
    objector = USERS[0]
    system.object(objector)
    system.wait_status(objector, "purged")

    publish_with_librdkafka(system, posts_for(USERS, "a"))
    expected = sorted(f"{u}-a" for u in USERS[1:])
    eventually(lambda: sorted(r["post_id"] for r in system.training_rows()) == expected, timeout=60, what="eligible posts stored")

    # librdkafka put some users off their home partition: those posts were moved there.
    placements = {r.key.decode(): r.partition for r in system.read(system.topics.posts)}
    misplaced = [u for u, p in placements.items() if posts_partitions != system.partitions or p != home_partition(u, system.partitions)]
    assert misplaced, "the test needs a partitioner that disagrees with murmur2"
    ingest = system.metrics("ingest")
    assert total(ingest, "consentry_ingest_repartitioned_total") == len(misplaced)
    assert total(ingest, "consentry_ingest_dropped_total", reason="objected") == 1
