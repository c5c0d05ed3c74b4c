"""Liveness with years of state: ingest loads a consent changelog that takes longer than the
consumer group's `max.poll.interval.ms` to read, with a second worker joining mid-load (a
forced rebalance that revokes partitions while they load), and still becomes ready and decides.

Before the fix ingest did not poll `posts` while it loaded: aiokafka dropped it from the group
once the load outlasted the poll interval, and it never came back. The quick version runs in
`make test` with a poll interval of one second; the full one (5,000,000 users) in
`make test-reliability`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consentry.domain.consent import apply_notice, apply_objection, apply_receipt
from consentry.domain.model import ENFORCED, Notice, ObjectionEvent, Receipt
from consentry.kafka import BatchSender
from consentry.partitioning import home_partition
from consentry.scrape import scrape, total
from consentry.timeutil import format_rfc3339, now_us
from consentry.wire import encode_consent_state
from tests.support.ports import free_port
from tests.support.system import System
from tests.support.wait import eventually

DAY_US = 86_400_000_000
POLL_INTERVAL_MS = 1_000
TEMPLATE = "TEMPLATE-USER-ID"
TOLD = [f"told-{n}" for n in range(6)]  # notified long ago: their posts are accepted
OBJECTOR = "objector"  # objected: his post is dropped, never forwarded, even mid-load


def notified_row(at_us: int) -> bytes:
    """A user notified 60 days ago, as the consent table's changelog holds them (with the
    notice rule on that is nearly every user: each is held in ingest's view)."""
    notice = Notice(f"n-{TEMPLATE}", TEMPLATE, "v1", "email", at_us - 60 * DAY_US, "FR")
    return encode_consent_state(apply_notice(None, notice, at_us))  # type: ignore[arg-type]


def objected_row(user: str, at_us: int) -> bytes:
    state = apply_notice(None, Notice(f"n-{user}", user, "v1", "email", at_us - 60 * DAY_US, "FR"), at_us)
    event = ObjectionEvent(f"obj-{user}", user, "object", at_us - DAY_US, "web")
    state = apply_objection(state, event, at_us)
    state = apply_receipt(state, Receipt(ENFORCED, user, (event.objection_id,), at_us), at_us)
    return encode_consent_state(state)  # type: ignore[arg-type]


async def seed_changelog(bootstrap: str, topic: str, partitions: int, users: int) -> float:
    """`users` changelog rows, pre-encoded, in large batches; the named users last (their rows
    at the end of their partitions: the last a load reads). Returns the seconds it took."""
    started = time.perf_counter()
    at = now_us()
    template = notified_row(at)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20, max_request_size=4 << 20)
    await producer.start()
    try:
        sender = BatchSender(producer)
        for i in range(users):
            user = f"u-{i:08d}"
            sender.append(topic, i % partitions, user.encode(), template.replace(TEMPLATE.encode(), user.encode()))
            if i % 50_000 == 49_999:
                await sender.send()
        for user in TOLD:
            sender.append(topic, home_partition(user, partitions), user.encode(), template.replace(TEMPLATE.encode(), user.encode()))
        sender.append(topic, home_partition(OBJECTOR, partitions), OBJECTOR.encode(), objected_row(OBJECTOR, at))
        await sender.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


def post(post_id: str, user: str) -> dict[str, Any]:
    return {
        "post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public",
        "text": f"text of {post_id}", "lang": "fr", "country": "FR", "author_is_minor": False,
    }


class Worker:
    """One more ingest process, beside the one System starts (its own status port)."""

    def __init__(self, system: System, name: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = system.log_dir / f"{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consentry_cli", "ingest"],
            env={**system.env, **env, "CONSENTRY_INGEST_PORT": str(self.port)},
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def readiness(url: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return {"ready": False, "detail": "not answering"}
    return response.json()


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path) -> Iterator[System]:
    bootstrap, flavor = broker
    env = {"CONSENTRY_MAX_POLL_INTERVAL_MS": str(POLL_INTERVAL_MS)}
    with System(bootstrap, flavor, tmp_path, notices=True, extra_env=env) as sut:
        yield sut


def run_story(system: System, users: int, timeout: float) -> dict[str, float]:
    system.create_topics()
    seeded_s = asyncio.run(seed_changelog(system.bootstrap, system.topics.consent_state, system.partitions, users))
    system.publish_posts([post(f"{u}-1", u) for u in TOLD] + [post("objector-1", OBJECTOR)])

    started = time.monotonic()
    system.start("ingest", wait=False)
    first = system.url("ingest")
    eventually(lambda: "loading" in readiness(first)["detail"], timeout=120, what="ingest loading its consent state")
    # A second worker joins while the first loads: a rebalance revokes what it was loading.
    second = Worker(system, "ingest-2", {})
    try:
        def both_ready() -> bool:
            for url, process in ((first, system.processes["ingest"]), (second.url(), second.process)):
                assert process.poll() is None, f"an ingest worker exited with {process.returncode}"
                if not readiness(url)["ready"]:
                    return False
            return True

        eventually(both_ready, timeout=timeout, interval=0.5, what="both ingest workers ready (consent state loaded)")
        ready_s = time.monotonic() - started

        def decided() -> set[str]:
            forwarded = {orjson.loads(r.value).get("post_id") for r in system.read(system.topics.training_posts)}
            return forwarded if {f"{u}-1" for u in TOLD} <= forwarded else set()

        forwarded = eventually(decided, timeout=60, what="the notified users' posts forwarded")
        assert "objector-1" not in forwarded  # fail closed held throughout the load
        assignments = [total(scrape(f"{url}/metrics"), "consentry_ingest_assignments_total") for url in (first, second.url())]
        # The first assignment of each, and the rebalance the second one's arrival caused: a
        # few, not one per load.
        assert 1 <= assignments[0] <= 3 and 1 <= assignments[1] <= 3, assignments
        return {"users": users, "seed_s": round(seeded_s, 1), "ready_s": round(ready_s, 1), "assignments": sum(assignments)}
    finally:
        second.stop()


@pytest.mark.quick
def test_ingest_loads_a_changelog_longer_than_the_poll_interval_through_a_rebalance(system: System) -> None:
    figures = run_story(system, users=200_000, timeout=180)
    print(f"\nliveness (quick): {figures}")


@pytest.mark.reliability
@pytest.mark.timeout(1800)
def test_ingest_loads_five_million_users_through_a_rebalance(system: System) -> None:
    figures = run_story(system, users=5_000_000, timeout=1200)
    print(f"\nliveness (5M users): {figures}")
