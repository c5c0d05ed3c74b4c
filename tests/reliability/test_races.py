"""Races: many users' posts, notices, objections, withdrawals and re-deliveries, interleaved
across partitions, through the real pipeline, with the production default (the notice rule
on); the Delta table is compared with the contract's rule. The scale-out runs have two
consent and two ingest workers, and workers join and leave while objections arrive.

The oracle (tests/reliability/oracle.py) and why it is both sound and strict:

* Ingest decides each post with its view of the consent state at that moment, which may lag
  the events the system acknowledged. So the check never asks what a post's fate was at the
  time; it uses the user's final history H (every acknowledged event, which the test also
  checks is exactly what the consent service holds, each enforced, each objection purged)
  and the notices the user was sent.
* Sound (no leak): a stored post must be eligible under H and the notices. If it were not,
  some objection in H was unknown to ingest when it forwarded the post; ingest writes that
  objection's purge marker after every post it forwarded, and decides later re-deliveries
  knowing it, so the post cannot survive. In particular a user objecting at the end has no
  row at all, and the posts of users told recently or never are held, never stored.
* Strict (nothing lost), for every user: a post is required when it is eligible and one of
  its deliveries was sent after every event of its user was applied (the latest
  `enforced_at` in the consent state; any delivery for users without events). Before that,
  the contract lets a post be dropped ("a post that arrives before a withdrawal has been
  applied"), and an objection's purge deletes every row of its user stored so far; after it,
  ingest decides with the whole history and writes no marker after the post. Posts published
  once the run settled ("late" ones, including re-deliveries of early posts) are required
  whenever eligible, with no wait for ingest in between.
* Objection and post of one user sent at the same instant, in either order ("twin"
  scripts): when the objection reaches `purged`, none of the user's posts is stored.
* Posts held for want of a notice, then released when a notice sent long ago arrives ("told
  late" scripts), are stored exactly once.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.reliability import races
from tests.reliability.oracle import objecting_now
from tests.reliability.workload import Churn, World, check_purged_leave_nothing, check_world, flush_pipeline
from tests.support import ledger
from tests.support.logcheck import assert_logs_clean
from tests.support.system import System

# Two consent and two ingest workers from the start: each second worker leaves mid-load and
# joins again, while objections arrive.
LEAVE_AND_REJOIN = [(3, "leave", "ingest-2"), (6, "leave", "consent-2"), (10, "join", "ingest-2"), (13, "join", "consent-2")]
# One worker each at first: the second ones join mid-load, then the first ones leave.
JOIN_THEN_HAND_OVER = [(3, "join", "consent-2"), (6, "join", "ingest-2"), (12, "leave", "ingest"), (15, "leave", "consent")]


def run_races(system: System, seed: int, users: int, posts_partitions: int, churn: list[tuple[int, str, str]] | None = None) -> dict[str, int]:
    system.create_topics(posts_partitions=posts_partitions)
    # Every worker runs from the start, except those whose first move is to join.
    system.start(*[s for s in system.instances if (_first_action(churn, s) or (0, "", s))[1] != "join"])
    world = World(system, random.Random(seed), tag=f"r{seed}", posts_partitions=posts_partitions)
    mover = Churn(system, churn or [], lambda: world.counts["waves"])

    async def phase_one() -> None:
        async with world:
            if churn:
                mover.start()
            await races.play(world, users, pace=lambda: 0.15 if mover.pending else 0.0)
            mover.load_done.set()
            await asyncio.to_thread(mover.join)
            mover._note(f"load done after {world.counts['waves']} waves; churn done: {mover.done}")
            await world.wait_settled()

    asyncio.run(phase_one())
    # Every objection is purged now: users objecting at the end have nothing stored.
    rows = system.training_rows()
    objecting = {u.user_id for u in world.users.values() if objecting_now(list(u.events.values()))}
    early = sorted(r["post_id"] for r in rows if r["user_id"] in objecting)
    assert not early, f"posts of objecting users still stored after purged: {early[:10]}"

    async def phase_two() -> dict:
        async with world:
            await races.play_late(world)
            return await world.consent_states()

    consent = asyncio.run(phase_two())
    flush_pipeline(system, posts_partitions)
    world.wait_released(consent)
    figures = check_world(world, system.training_rows(), consent)
    assert_logs_clean(system, [t for u in world.users.values() for t in u.texts], [system.token(u) for u in list(world.users)[:50]])
    vacuumed = check_purged_leave_nothing(world)
    print(f"seed {seed}: {figures} {vacuumed} {dict(world.counts)} churn: {mover.done} ({mover.under_load} under load)")
    ledger.record("no leak", **vacuumed)
    ledger.record("no leak", cases=figures["cases"], leaks=figures["leaks"])
    ledger.record("nothing lost", cases=figures["cases"], posts=figures["posts"], required=figures["required"], lost=figures["lost"],
                  duplicates=figures["duplicates"], **{"rebalances under load": mover.under_load})
    ledger.record("old and new requests", **{"imported events": sum(v for k, v in world.counts.items() if k.startswith("imported")),
                                             "gateway events": sum(v for k, v in world.counts.items() if k.endswith("via gateway")),
                                             "notices": world.counts["notices"]})
    return figures


def _first_action(churn: list[tuple[int, str, str]] | None, instance: str) -> tuple[int, str, str] | None:
    return next((step for step in churn or () if step[2] == instance), None)


# The second case runs in make test-reliability only, to keep make test under 15 minutes (the
# full scaled runs there cover both kinds of churn again).
@pytest.mark.parametrize(("seed", "posts_partitions", "churn"), [
    pytest.param(1, 4, LEAVE_AND_REJOIN, id="1-4-leave-and-rejoin", marks=pytest.mark.quick),
    pytest.param(2, 3, JOIN_THEN_HAND_OVER, id="2-3-join-then-hand-over", marks=pytest.mark.reliability),
])
def test_races_quick(scaled_system: System, seed: int, posts_partitions: int, churn: list) -> None:
    """`posts` laid out like the user-keyed topics (decided in place), or not (all re-keyed);
    two consent and two ingest workers, joining and leaving under load."""
    run_races(scaled_system, seed=seed, users=60, posts_partitions=posts_partitions, churn=churn)


@pytest.mark.reliability
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("seed", "posts_partitions"), [(101, 4), (202, 3)])
def test_races_full(system: System, seed: int, posts_partitions: int) -> None:
    run_races(system, seed=seed, users=600, posts_partitions=posts_partitions)


@pytest.mark.reliability
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("seed", "posts_partitions", "churn"), [
    (303, 4, LEAVE_AND_REJOIN + [(s + 20, a, i) for s, a, i in LEAVE_AND_REJOIN] + [(s + 40, a, i) for s, a, i in LEAVE_AND_REJOIN]),
    (404, 6, JOIN_THEN_HAND_OVER + [(20, "join", "consent"), (24, "join", "ingest"), (30, "leave", "consent-2"), (34, "leave", "ingest-2"),
                                    (40, "join", "consent-2"), (44, "join", "ingest-2")]),
], ids=["303-4-leave-and-rejoin-x3", "404-6-hand-over-and-back"])
def test_races_full_scaled(scaled_system: System, seed: int, posts_partitions: int, churn: list) -> None:
    run_races(scaled_system, seed=seed, users=600, posts_partitions=posts_partitions, churn=churn)
