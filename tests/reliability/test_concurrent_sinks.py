"""Several training sinks on one table (issue 13): each owns the buckets of its Kafka
partitions of training.posts and commits concurrently with the others. Under load, one is
killed (kill -9) and a new one starts (its start-up clean-up runs while the others write):
the table stays readable, every post is stored exactly once, re-delivered posts included,
and no purged post is left.

The load: users with posts, some posts re-delivered at new offsets, and for a third of the
users a purge marker followed by more posts (only those after the marker may stay)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from services.sink.store import DeltaTrainingStore
from tests.support.sink import SinkProcesses, create_sink_topics, post_message, publish, purge_message, sink_settings
from tests.support.wait import eventually, eventually_async


async def run_sinks(broker: tuple[str, str], tmp_path: Path, sinks: int, users: int, rounds: int, seed: int) -> None:
    partitions = 6
    settings = sink_settings(*broker, tmp_path, partitions=partitions, training_store_buckets=24)
    await create_sink_topics(settings)
    rng = random.Random(seed)
    names = [f"sink-{n}" for n in range(1, sinks + 1)]
    group = SinkProcesses(settings, tmp_path / "logs")
    expected: set[str] = set()
    gone: set[str] = set()
    published = 0
    try:
        for name in names:
            group.start(name)
        eventually(lambda: all(group.ready(n) for n in names), timeout=90, what="every sink ready")
        victim = names[0]
        version = lambda: DeltaTrainingStore(settings.store_uri).version()  # noqa: E731
        for r in range(rounds):
            before = version()
            messages = []
            for u in range(users):
                user = f"user-{seed}-{u}"
                for i in range(3):
                    post_id = f"{user}-r{r}-{i}"
                    messages.append((user, post_message(post_id, user)))
                    expected.add(post_id)
                    if rng.random() < 0.1:  # re-delivered at a later offset
                        messages.append((user, post_message(post_id, user)))
                if u % 3 == 0 and r == rounds // 2:
                    # A purge marker: every post of the user so far goes, those after it stay.
                    messages.append((user, purge_message(user, f"o-{user}")))
                    gone |= {p for p in expected if p.startswith(f"{user}-r")}
                    expected -= gone
            await publish(settings, *messages)
            published += len(messages)
            if r == rounds // 3:
                group.kill(victim)  # mid-load, with commits in flight
                group.start(f"{victim}-again")  # its start-up clean-up runs while the others write
            # Paced by the sinks: the next round goes out once they committed some of this one.
            eventually(lambda: version() >= before + 2, timeout=60, interval=0.05, what=f"round {r} being committed")
        eventually(lambda: group.ready(f"{victim}-again"), timeout=90, what="the new sink ready")
        await eventually_async(lambda: _stored_equals(settings.store_uri, expected), timeout=120, interval=0.5, what="every post stored once")
        stored = DeltaTrainingStore(settings.store_uri).read(["post_id"]).column("post_id").to_pylist()
        assert len(stored) == len(set(stored)), f"{len(stored) - len(set(stored))} duplicate rows"
        assert not set(stored) & gone, f"{len(set(stored) & gone)} purged posts left"
        for name in list(group.processes):
            assert group.processes[name].poll() is None, f"{name} died:\n{group.log(name)[-3000:]}"
    finally:
        group.stop()


async def _stored_equals(uri: str, expected: set[str]) -> bool:
    rows = await asyncio.to_thread(lambda: DeltaTrainingStore(uri).read(["post_id"]).column("post_id").to_pylist())
    assert set(rows) == expected, f"{len(expected - set(rows))} missing, {len(set(rows) - expected)} unexpected, {len(rows) - len(set(rows))} duplicates"
    return len(rows) == len(expected)


@pytest.mark.quick
async def test_two_sinks_one_killed_quick(broker: tuple[str, str], tmp_path: Path) -> None:
    await run_sinks(broker, tmp_path, sinks=2, users=40, rounds=3, seed=1)


@pytest.mark.reliability
@pytest.mark.parametrize("sinks", [2, 3])
async def test_sinks_under_load_one_killed(broker: tuple[str, str], tmp_path: Path, sinks: int) -> None:
    await run_sinks(broker, tmp_path, sinks=sinks, users=600, rounds=12, seed=sinks)
