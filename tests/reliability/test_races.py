"""Races: many users' posts, objections, withdrawals and re-deliveries, interleaved across
partitions, through the real pipeline; the Delta table is compared with the contract's rule.

The oracle (tests/reliability/oracle.py) and why it is both sound and strict:

* Ingest decides each post with its view of the consent state at that moment, which may lag
  the events the system acknowledged. So the check never asks what a post's fate was at the
  time; it uses the user's final history H (every acknowledged event, which the test also
  checks is exactly what consent holds).
* Sound (no leak): a stored post must be eligible under H. If it were not, some objection
  in H was unknown to ingest when it forwarded the post; ingest writes that objection's
  purge marker after every post it forwarded, and decides later re-deliveries knowing it,
  so the post cannot survive. In particular a user objecting at the end has no row at all.
* Strict (nothing lost): a user who never objected has every public adult post stored,
  exactly once. For users with a history, a purge deletes all their rows (also eligible
  ones, and a withdrawal does not restore them), so which of their early posts survive
  depends on timing; but once every acknowledged event is applied and purged and ingest has
  read it (System.sync_ingest), posts published from then on ("late" ones, including
  re-deliveries of early posts) are stored if and only if H makes them eligible.
* Objection and post of one user sent at the same instant, in either order ("twin"
  scripts): when the objection reaches `purged`, none of the user's posts is stored.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.reliability import races
from tests.reliability.oracle import objecting_now
from tests.reliability.workload import World, check_purged_leave_nothing, check_world, flush_pipeline
from tests.support import ledger
from tests.support.logcheck import assert_logs_clean
from tests.support.system import System


def run_races(system: System, seed: int, users: int, posts_partitions: int) -> dict[str, int]:
    system.create_topics(posts_partitions=posts_partitions)
    system.start()
    world = World(system, random.Random(seed), tag=f"r{seed}", posts_partitions=posts_partitions)

    async def phase_one() -> None:
        async with world:
            await races.play(world, users)
            await world.wait_settled()

    asyncio.run(phase_one())
    # Every objection is purged now: users objecting at the end have nothing stored.
    rows = system.training_rows()
    objecting = {u.user_id for u in world.users.values() if objecting_now(list(u.events.values()))}
    early = sorted(r["post_id"] for r in rows if r["user_id"] in objecting)
    assert not early, f"posts of objecting users still stored after purged: {early[:10]}"

    system.sync_ingest(*world.users)

    async def phase_two() -> None:
        async with world:
            await races.play_late(world)

    async def final_states() -> dict:
        async with world:
            docs = await asyncio.gather(*(world.status(u) for u in world.users))
        return {doc["user_id"]: doc for doc in docs}

    asyncio.run(phase_two())
    flush_pipeline(system, posts_partitions)
    consent = asyncio.run(final_states())
    figures = check_world(world, system.training_rows(), consent)
    assert_logs_clean(system, [t for u in world.users.values() for t in u.texts], [system.token(u) for u in list(world.users)[:50]])
    vacuumed = check_purged_leave_nothing(world)
    print(f"seed {seed}: {figures} {vacuumed} {dict(world.counts)}")
    ledger.record("no leak", **vacuumed)
    ledger.record("no leak", cases=figures["cases"], leaks=figures["leaks"])
    ledger.record("nothing lost", cases=figures["cases"], posts=figures["posts"], lost=figures["lost"], duplicates=figures["duplicates"])
    ledger.record("old and new requests", **{"imported events": sum(v for k, v in world.counts.items() if k.startswith("imported")),
                                             "gateway events": sum(v for k, v in world.counts.items() if k.endswith("via gateway"))})
    return figures


@pytest.mark.quick
@pytest.mark.parametrize(("seed", "posts_partitions"), [(1, 4), (2, 3)])
def test_races_quick(system: System, seed: int, posts_partitions: int) -> None:
    """`posts` laid out like the user-keyed topics (decided in place), or not (all re-keyed)."""
    run_races(system, seed=seed, users=60, posts_partitions=posts_partitions)


@pytest.mark.reliability
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("seed", "posts_partitions"), [(101, 4), (202, 3), (303, 4), (404, 6)])
def test_races_full(system: System, seed: int, posts_partitions: int) -> None:
    run_races(system, seed=seed, users=600, posts_partitions=posts_partitions)
