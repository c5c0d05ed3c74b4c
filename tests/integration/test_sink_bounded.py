"""The sink without an index of the table (issue 13): a restarted sink recognises what the table
holds from the positions recorded in its commits and from the post ids of the buckets it
writes, nothing else. A crash between the Delta commit and the offset commit (the group's
offset left behind the table) replays nothing twice; posts re-delivered at new offsets are
stored once."""

from __future__ import annotations

from pathlib import Path

from services.sink.store import DeltaTrainingStore
from tests.support.sink import RunningSink, SinkProcesses, create_sink_topics, post_message, publish, purge_message, sink_settings, user_in
from tests.support.wait import eventually, eventually_async


def stored(settings) -> list[str]:  # type: ignore[no-untyped-def]
    return DeltaTrainingStore(settings.store_uri).read(["post_id"]).column("post_id").to_pylist()


async def test_a_restarted_sink_stores_nothing_twice_without_an_index(broker: tuple[str, str], tmp_path: Path) -> None:
    settings = sink_settings(*broker, tmp_path, training_store_buckets=8)
    await create_sink_topics(settings)
    alice, bob, zoe = (user_in(p % settings.partitions, settings.partitions, name) for p, name in enumerate(("alice", "bob", "zoe")))
    await publish(settings, (alice, post_message("a-1", alice)), (bob, post_message("b-1", bob)), (zoe, post_message("z-1", zoe)),
                  (zoe, purge_message(zoe)), (alice, post_message("a-1", alice)))  # a-1 re-delivered in the same run
    async with RunningSink(settings):
        async def first() -> bool:
            return sorted(stored(settings)) == ["a-1", "b-1"]
        await eventually_async(first, timeout=60, what="the first posts stored")

    # A sink that dies after its Delta commit, before its offset commit: the table is ahead.
    await publish(settings, (bob, post_message("b-0", bob)), (zoe, post_message("z-2", zoe)))
    crashing = SinkProcesses(settings, tmp_path / "logs", CONSENTRY_FAILPOINTS="sink.before_commit:1")
    crashing.start("crashing")
    try:
        assert crashing.processes["crashing"].wait(timeout=90) == 75, crashing.log("crashing")[-3000:]
    finally:
        crashing.stop()
    eventually(lambda: {"b-0", "z-2"} & set(stored(settings)), timeout=5, what="the crashed sink's commit in the table")
    # Re-delivered at new offsets (an upstream producer's retry, ingest after a crash), and a new post.
    await publish(settings, (alice, post_message("a-1", alice)), (bob, post_message("b-1", bob)), (bob, post_message("b-2", bob)))
    async with RunningSink(settings) as sink:
        assert not hasattr(sink.worker.writer, "index")

        async def second() -> bool:
            return "b-2" in stored(settings)
        await eventually_async(second, timeout=60, what="the new post stored")
    assert sorted(stored(settings)) == ["a-1", "b-0", "b-1", "b-2", "z-2"]  # once each; zoe's purged post not replayed back
