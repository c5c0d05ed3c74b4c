"""The gateway never answers 202 for an objection the broker did not acknowledge: while the
broker is down it answers 503 with a clear message, and it recovers on its own.

Uses a broker of its own, stopped and started again on the same port. Tansu keeps
everything in memory, so the restarted broker is empty: the topics are created again (on
Apache Kafka the log survives a broker restart; see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson

from consentry.partitioning import home_partition
from consentry_cli.broker import EmbeddedBroker
from tests.support import ledger
from tests.support.ports import free_port
from tests.support.system import System
from tests.support.wait import eventually


def users_on_every_partition(prefix: str, partitions: int, per_partition: int = 3) -> list[str]:
    users: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(u) < per_partition for u in users.values()):
        user = f"{prefix}-{n}"
        n += 1
        if len(users[home_partition(user, partitions)]) < per_partition:
            users[home_partition(user, partitions)].append(user)
    return [u for group in users.values() for u in group]


async def object_many(system: System, users: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/objections", headers=system.auth(u)) for u in users))


def test_gateway_answers_503_while_the_broker_is_down_and_recovers_by_itself(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log")
    broker.start()
    system = System(broker.bootstrap, "tansu", tmp_path, notices=True, extra_env={"CONSENTRY_PUBLISH_TIMEOUT_S": "2"})
    try:
        system.create_topics()
        system.start("gateway")
        before = system.object("ann")

        broker.stop()
        down = asyncio.run(object_many(system, [f"down-{n}" for n in range(10)]))
        assert {r.status_code for r in down} == {503}, [r.text for r in down]
        assert all("retry" in r.json()["detail"] and r.headers.get("Retry-After") for r in down)
        ready = httpx.get(f"{system.gateway_url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["detail"] == "broker unreachable"

        broker.start()  # same port, empty
        system.create_topics()
        # The producer finds each partition's leader again on its own, one partition after
        # another: recovered means a round of users spread over every partition all get 202.
        rounds: list[list[httpx.Response]] = []

        def every_partition_accepts() -> bool:
            rounds.append(asyncio.run(object_many(system, users_on_every_partition(f"up-{len(rounds)}", system.partitions))))
            assert {r.status_code for r in rounds[-1]} <= {202, 503}, [r.text for r in rounds[-1]]
            return {r.status_code for r in rounds[-1]} == {202}

        eventually(every_partition_accepts, timeout=60, what="gateway accepting objections on every partition again")
        up = [r for answers in rounds for r in answers if r.status_code == 202]
        assert httpx.get(f"{system.gateway_url}/readyz", timeout=10).status_code == 200

        stored = {orjson.loads(r.value)["objection_id"] for r in system.read(system.topics.objections)}
        acknowledged = {r.json()["objection_id"] for r in up}
        assert acknowledged <= stored  # every 202 is in the (new) broker's log
        assert before["objection_id"] not in stored  # Tansu forgot everything: memory only
        ledger.record("nothing lost", **{"202 during broker outage": 0, "503 during broker outage": len(down)})
    finally:
        system.stop()
        broker.stop()


def test_after_the_embedded_broker_restarts_empty_new_posts_are_still_stored(tmp_path: Path) -> None:
    """`consentry up` again on the same data directory: the table remembers how far it applied
    the old training.posts, the new (empty) topic starts again at offset 0."""
    from consentry.timeutil import format_rfc3339, now_us

    def posts(prefix: str, n: int) -> list[dict]:
        # From outside the notice jurisdictions: used without a notice, the notice rule on.
        return [{"post_id": f"{prefix}-{i}", "user_id": f"{prefix}-user-{i}", "created_at": format_rfc3339(now_us()),
                 "visibility": "public", "text": "t", "country": "US"} for i in range(n)]

    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log")
    broker.start()
    system = System(broker.bootstrap, "tansu", tmp_path, notices=True)
    try:
        system.create_topics()
        system.start("ingest", "sink")
        system.publish_posts(posts("before", 20))
        eventually(lambda: len(system.training_rows()) == 20, what="first posts stored")
        system.stop()
        broker.stop()
        broker.start()
        system.create_topics()
        system.start("ingest", "sink")
        system.publish_posts(posts("after", 8))
        eventually(lambda: len(system.training_rows()) == 28, what="posts of the new topic stored")
        assert "was created again" in system.log("sink")
    finally:
        system.stop()
        broker.stop()
