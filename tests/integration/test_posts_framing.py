"""CONSENTRY_POSTS_FRAMING=schema-registry: ingest, in-process against the embedded broker, takes
posts framed by a Confluent-compatible Schema Registry JSON serializer (magic byte 0, 4-byte
schema id, JSON), forwards what it re-keys as plain JSON, and rejects plain JSON with the
reason code bad_framing."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from consentry.kafka import ensure_topics
from consentry.wire import frame
from services.ingest.settings import IngestSettings
from services.ingest.worker import IngestWorker
from tests.support.kafka import produce, read_all
from tests.support.ports import free_port
from tests.support.wait import eventually_async


def post(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": f"text of {post_id}"}


async def test_framed_posts_are_accepted_and_plain_json_is_rejected_as_bad_framing(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    settings = IngestSettings(
        kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=prefix, partitions=2, ingest_port=free_port(),
        notice_rule="off", posts_framing="schema-registry", session_timeout_ms=3000, heartbeat_interval_ms=500,  # Tansu assigns after half the timeout
    )
    topics = settings.topics
    await ensure_topics(settings)
    users = [f"framed-{n}" for n in range(6)]  # both partitions: some posts are re-keyed to their home partition
    framed = [(u.encode(), frame(orjson.dumps(post(f"{u}-p", u)), 7)) for u in users]
    plain = (b"plain", orjson.dumps(post("plain-p", "plain")))
    await produce(bootstrap, topics.posts, [*framed, plain, (b"short", b"\x00\x00")])

    worker = IngestWorker(settings)
    await worker.start()
    runner = asyncio.create_task(worker.run())
    try:
        async def stored() -> list[dict]:
            return [orjson.loads(r.value) for r in await read_all(bootstrap, topics.training_posts)]

        async def all_in() -> bool:
            return len(await stored()) == len(users) and len(await read_all(bootstrap, topics.posts_rejected)) == 2

        await eventually_async(all_in, timeout=60, what="framed posts accepted, the others rejected")
        assert sorted(p["post_id"] for p in await stored()) == sorted(f"{u}-p" for u in users)
        rejected = [orjson.loads(r.value) for r in await read_all(bootstrap, topics.posts_rejected)]
        assert [r["reason_code"] for r in rejected] == ["bad_framing", "bad_framing"]
        assert "plain JSON" in rejected[0]["reason"] and "CONSENTRY_POSTS_FRAMING" in rejected[0]["reason"]
        # What ingest re-keys to a user's home partition is the post's plain JSON.
        moved = await read_all(bootstrap, topics.posts_by_user)
        assert all(orjson.loads(r.value)["user_id"] == r.key.decode() for r in moved)
    finally:
        worker._stopping.set()
        await runner
        await worker.stop()
