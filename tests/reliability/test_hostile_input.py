"""Hostile `posts`: generated messages, each broken in one known way (tests/support/hostile.py),
through the real pipeline, with the notice rule on (the production default). Each invalid one
lands in `posts.rejected` with the reason its generator expects (naming the field), each valid
one of a user told long ago is stored exactly once, duplicates once, ineligible ones nowhere,
valid ones of users never told are held (not stored, not rejected: waiting in ingest); the
pipeline keeps flowing and logs no post text.

The notices are published just before the posts, without waiting for them: a post decided
before its author's notice reached ingest waits and is released at the next deferred-posts
tick, so both paths run."""

from __future__ import annotations

import asyncio
import random
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consentry.domain.model import REJECTED_RAW_LIMIT
from consentry.scrape import total
from consentry.timeutil import format_rfc3339, now_us
from tests.reliability.workload import flush_pipeline
from tests.support import ledger
from tests.support.hostile import DROPPED, DUPLICATE, STORED, Case, hostile_posts
from tests.support.logcheck import assert_logs_clean
from tests.support.system import System
from tests.support.wait import eventually

UNTOLD_SHARE = 0.15  # of the users with a valid post: never told, their posts wait


async def publish(system: System, cases: list[Case]) -> dict[tuple[int, int], Case]:
    """Every case, in order; returns them by (partition, offset) as the broker placed them."""
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, acks="all", linger_ms=5, max_request_size=4 << 20)
    await producer.start()
    try:
        placed = {}
        for i in range(0, len(cases), 500):
            chunk = cases[i : i + 500]
            futures = [await producer.send(system.topics.posts, c.value, key=c.key) for c in chunk]
            for case, meta in zip(chunk, await asyncio.gather(*futures), strict=True):
                placed[(meta.partition, meta.offset)] = case
        return placed
    finally:
        await producer.stop()


def run_fuzz(system: System, count: int, seed: int) -> None:
    system.create_topics()
    system.start("consent", "ingest", "sink")
    rng = random.Random(seed)
    cases = list(hostile_posts(rng, count, tag=f"h{seed}"))
    users = sorted({c.key.decode() for c in cases if c.verdict == STORED})
    untold = set(rng.sample(users, int(len(users) * UNTOLD_SHARE)))
    told_at = format_rfc3339(now_us() - 40 * 86_400_000_000)
    system.publish_notices([{"notice_id": f"n-{uuid.uuid4().hex}", "user_id": u, "notice_version": "2025-05", "channel": "email",
                             "sent_at": told_at, "country": "FR"} for u in users if u not in untold])
    placed = asyncio.run(publish(system, cases))
    flush_pipeline(system)
    assert all(system.processes[s].poll() is None for s in ("consent", "ingest", "sink")), "a service died"
    held = {c.post_id for c in cases if c.verdict in (STORED, DUPLICATE) and c.key.decode() in untold}
    # Posts that waited for their author's notice are released at ingest's next tick once it is read.
    wanted = {c.post_id for c in cases if c.verdict == STORED} - held
    eventually(lambda: not wanted - {r["post_id"] for r in system.training_rows()}, timeout=120, what="posts of told users stored")
    eventually(lambda: total(system.metrics("ingest"), "consentry_ingest_deferred_posts") == len(held), timeout=60,
               what=f"{len(held)} posts of users never told held")

    rejected = {}
    for record in system.read(system.topics.posts_rejected):
        body = orjson.loads(record.value)
        rejected[(body["partition"], body["offset"])] = body
    rows = [r for r in system.training_rows() if not r["user_id"].startswith("flush-")]
    stored = {}
    for row in rows:
        stored[row["post_id"]] = stored.get(row["post_id"], 0) + 1

    wrong = []
    for where, case in placed.items():
        got = rejected.get(where)
        if case.verdict in (STORED, DUPLICATE, DROPPED):
            if got is not None:
                wrong.append(f"{case.label}: rejected ({got['reason']})")
            elif (case.verdict == DROPPED or case.post_id in held) and case.post_id in stored:
                wrong.append(f"{case.label}: stored" + (" (its author was never told)" if case.post_id in held else ""))
            elif case.post_id in held:
                continue
            elif case.verdict != DROPPED and stored.get(case.post_id) != 1:
                wrong.append(f"{case.label}: stored {stored.get(case.post_id, 0)} times")
            continue
        if got is None:
            wrong.append(f"{case.label}: not rejected")
            continue
        if got["reason_code"] != case.verdict or (case.field and case.field not in got["reason"]):
            wrong.append(f"{case.label}: {got['reason']}")
        raw = case.value or b""
        if got["topic"] != system.topics.posts or got["value_bytes"] != len(raw) or got["value_truncated"] != (len(raw) > REJECTED_RAW_LIMIT):
            wrong.append(f"{case.label}: bad envelope {dict((k, got[k]) for k in ('topic', 'value_bytes', 'value_truncated'))}")
        if len(got["value"].encode("utf-8", "surrogatepass")) > 3 * REJECTED_RAW_LIMIT:
            wrong.append(f"{case.label}: raw value not truncated")
    assert not wrong, f"{len(wrong)} of {len(placed)} misjudged: {wrong[:15]}"
    assert len(rejected) == sum(1 for c in cases if c.verdict not in (STORED, DUPLICATE, DROPPED))
    assert_logs_clean(system, [c.text for c in cases if c.text], [], services=("consent", "ingest", "sink"))
    counts = {
        "fuzzed messages": len(cases),
        "rejected with the expected reason": len(rejected),
        "misjudged": len(wrong),
        "stored": sum(1 for c in cases if c.verdict == STORED and c.post_id not in held),
        "held for want of a notice": len(held),
    }
    print(f"seed {seed}: {counts}")
    ledger.record("fail closed", **counts)
    ledger.record("nothing lost", duplicates=sum(n - 1 for n in stored.values()))


@pytest.mark.quick
def test_hostile_posts_quick(system: System) -> None:
    run_fuzz(system, 1_500, seed=5)


@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_hostile_posts_full(system: System) -> None:
    run_fuzz(system, 50_000, seed=6)
