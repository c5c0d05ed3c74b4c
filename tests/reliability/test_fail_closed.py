"""Fail closed: while ingest does not know a partition's consent state it holds the posts
of that partition, and the consent service answers 503 until its table is recovered.

The consent changelog is pre-filled with 40,000 users' records so that loading it takes
long enough to be watched; the one objecting user's record comes last. The notice rule is on
(the production default): the other user was told long ago, a notice the changelog records.
"""

from __future__ import annotations

import time

import httpx
from confluent_kafka import Producer

from consentry.domain.model import ConsentState, HistoryEntry, NoticeEntry
from consentry.wire import encode_consent_state
from consentry.partitioning import home_partition
from consentry.scrape import scrape, total
from consentry.timeutil import format_rfc3339, now_us
from tests.reliability.workload import flush_pipeline
from tests.support import ledger
from tests.support.system import System
from tests.support.wait import eventually

FILLERS = 40_000  # consent's recovery lasts seconds: its 503 is seen; ingest's load is held by a failpoint


def fill_changelog(system: System, partition: int, last_user: str, objected_at_us: int) -> None:
    producer = Producer({"bootstrap.servers": system.bootstrap, "linger.ms": 50, "batch.size": 1 << 20, "acks": "all"})
    topic = system.topics.consent_state

    def write(user: str, objection_id: str, at_us: int) -> None:
        entry = HistoryEntry(objection_id, "object", at_us, "import", enforced_at_us=objected_at_us, purged_at_us=objected_at_us)
        value = encode_consent_state(ConsentState(user, (entry,), intervals=((at_us, None),), updated_at_us=objected_at_us))
        while True:
            try:
                return producer.produce(topic, value, key=user.encode(), partition=partition)
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)

    for n in range(FILLERS):
        write(f"filler-{n}", f"o-{n}", objected_at_us - 10)
    write(last_user, "o-eve", objected_at_us)
    assert producer.flush(60) == 0


def tell_in_changelog(system: System, user: str, sent_at_us: int) -> None:
    """The user's row holds a notice sent at `sent_at_us` (as the consent service writes it)."""
    producer = Producer({"bootstrap.servers": system.bootstrap, "acks": "all"})
    notice = NoticeEntry(f"n-{user}", "2025-05", "email", sent_at_us, "FR")
    producer.produce(system.topics.consent_state, encode_consent_state(ConsentState(user, updated_at_us=sent_at_us, notices=(notice,))),
                     key=user.encode(), partition=home_partition(user, system.partitions))
    assert producer.flush(60) == 0


def test_posts_wait_while_consent_state_loads_and_consent_serves_only_when_recovered(system: System) -> None:
    system.create_topics()
    objected_at = now_us() - 3_600_000_000
    fill_changelog(system, home_partition("eve", system.partitions), "eve", objected_at)
    tell_in_changelog(system, "frank", now_us() - 40 * 86_400_000_000)
    posts = [{"post_id": f"{u}-{n}", "user_id": u, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": f"held text {u} {n}",
              "country": "FR"} for u in ("eve", "frank") for n in range(20)]
    system.publish_posts(posts)

    # Ingest starts with posts waiting and a long changelog to read.
    # Each chunk of the load waits a little (a failpoint), so the hold lasts seconds even on a
    # machine fast enough to read 40,000 records in one: the window must be observable.
    system.start("sink", wait=False)
    system.start("ingest", wait=False, env={"CONSENTRY_FAILPOINTS": "ingest.load_chunk@0.1"})
    seen_held = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{system.url('ingest')}/readyz", timeout=5)
        except httpx.HTTPError:
            continue
        held = total(scrape(f"{system.url('ingest')}/metrics"), "consentry_ingest_partitions_held")
        if ready.status_code == 503 and held > 0 and "loading consent state" in ready.json()["detail"]:
            # Held: nothing of any partition may have been forwarded. (Only a read that
            # ends while ingest is still held proves it: loading may finish meanwhile.)
            forwarded = system.read(system.topics.training_posts)
            if httpx.get(f"{system.url('ingest')}/readyz", timeout=5).status_code == 503:
                assert forwarded == []
                seen_held = held
        if ready.status_code == 200:
            break
    assert seen_held, "ingest was never seen holding posts while loading consent state"
    system.wait_ready("ingest")
    system.wait_ready("sink")
    flush_pipeline(system)
    stored = {r["post_id"] for r in system.training_rows()}
    assert {p["post_id"] for p in posts if p["user_id"] == "frank"} <= stored
    assert not {p["post_id"] for p in posts if p["user_id"] == "eve"} & stored

    # The consent service recovers the same table from the changelog before it answers.
    system.start("consent", "gateway", wait=False)
    answers = set()
    deadline = time.monotonic() + 300  # 100,000 users to recover: over 120 s when the 2 cores are shared
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{system.url('consent')}/v1/user/status", params={"user_id": "eve"}, timeout=2)
        except httpx.HTTPError:
            continue
        answers.add(response.status_code)
        if response.status_code == 200:
            doc = response.json()
            assert doc["objected"] is True and doc["status"] == "purged"
            break
        assert response.status_code == 503 and "recover" in response.json()["detail"], response.text
    assert 503 in answers and 200 in answers, answers
    system.wait_ready("gateway")
    assert system.status("eve")["history"][0]["objection_id"] == "o-eve"
    ledger.record("fail closed", **{"held partitions observed": int(seen_held), "posts forwarded while held": 0,
                                    "consent 503 while recovering": 1})
