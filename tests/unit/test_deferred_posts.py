"""The deferred posts' bound: `DeferredPosts.tick` never stops the worker's reading. Over
CONSENTRY_DEFERRED_MAX_POSTS index entries a deferred post is still appended, but waits
unindexed (its partition spills from its offset) and the full gauge says so; a new assignment
starts empty. (The reading back, the catch-up and the load run on a real broker:
tests/integration/test_deferred_store.py.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from consentry.domain.model import Post
from services.ingest.consent_view import ConsentView
from services.ingest.deferred import PENDING, DeferredPosts
from services.ingest.settings import IngestSettings

RAW = b'{"post_id": "p-0", "user_id": "u", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "hi"}'


class FakeSender:
    def __init__(self) -> None:
        self.appended: list[tuple[str, int, bytes]] = []

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.appended.append((topic, partition, key or b""))

    async def flush(self) -> None:
        pass


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, key: bytes, value: bytes, timestamp: None) -> SimpleNamespace:
        self.records.append(key)
        return SimpleNamespace(offset=len(self.records) - 1)


class FakeProducer:
    """Acknowledges each batch at the next offsets of its partition, when told to."""

    def __init__(self) -> None:
        self.next_offset: dict[int, int] = {}
        self.unacknowledged: list[tuple[asyncio.Future[Any], int, FakeBatch]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.unacknowledged.append((future, partition, batch))
        return future

    def acknowledge(self) -> None:
        for future, partition, batch in self.unacknowledged:
            base = self.next_offset.get(partition, 100)
            self.next_offset[partition] = base + len(batch.records)
            future.set_result(SimpleNamespace(offset=base))
        self.unacknowledged = []


class FakeReader:
    """The deferred topic's reader, for an assignment of no home partition."""

    def assign(self, partitions: list) -> None:
        pass


async def loaded(max_posts: int) -> DeferredPosts:
    view = ConsentView()
    view.reset({0, 1})
    deferred = DeferredPosts(IngestSettings(deferred_max_posts=max_posts), view)
    deferred.sender = FakeSender()  # type: ignore[assignment]
    deferred.producer = FakeProducer()  # type: ignore[assignment]
    deferred.reader = FakeReader()  # type: ignore[assignment]
    await deferred.assign(set())
    assert await deferred.load()
    return deferred


def hold(deferred: DeferredPosts, n: int, user: str = "u") -> None:
    deferred.hold(0, Post(f"p-{n}", user, n, "public", "hi", None, None, False), RAW)


async def appended(deferred: DeferredPosts) -> None:
    """The worker's flush, acknowledged."""
    await deferred.send()
    deferred.producer.acknowledge()  # type: ignore[attr-defined]


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


@pytest.mark.parametrize("ready", [True, False])
async def test_under_the_bound_a_post_is_indexed_and_tick_lets_the_worker_read(ready: bool) -> None:
    deferred = await loaded(max_posts=10)
    hold(deferred, 0)
    assert deferred.index.offset_of(0, "p-0") == PENDING
    await appended(deferred)
    assert await deferred.tick(ready=ready) is False
    assert deferred.index.offset_of(0, "p-0") == 100  # where the broker put it: what a release reads back


async def test_over_the_bound_posts_wait_unindexed_and_the_worker_reads_on() -> None:
    deferred = await loaded(max_posts=4)
    for n in range(6):
        hold(deferred, n, user=f"never-told-{n}")
    await appended(deferred)
    assert await deferred.tick(ready=True) is False  # never a reason to stop reading posts
    assert deferred.index.count == 4
    assert [deferred.index.offset_of(0, f"p-{n}") for n in range(6)] == [100, 101, 102, 103, None, None]
    assert deferred._spill == {0: 104}  # read again from the first unindexed post once there is room
    assert gauge("consentry_ingest_deferred_full") == 1
    assert gauge("consentry_ingest_deferred_unindexed") == 2
    assert gauge("consentry_ingest_deferred_posts") == 4

    hold(deferred, 6, user="told")  # the partition spills until a catch-up indexed the rest
    assert deferred.index.offset_of(0, "p-6") is None and (0, "told") not in deferred.index


async def test_a_new_assignment_starts_empty_and_not_full() -> None:
    deferred = await loaded(max_posts=1)
    for n in range(3):
        hold(deferred, n)
    await appended(deferred)
    assert await deferred.tick(ready=True) is False
    assert gauge("consentry_ingest_deferred_full") == 1
    await deferred.assign(set())
    assert await deferred.tick(ready=False) is False
    assert gauge("consentry_ingest_deferred_full") == 0 and deferred.index.count == 0


class FakeTopic:
    """The deferred topic's reader over records held here (partition -> [(offset, key, value)])."""

    def __init__(self, records: dict[int, list[tuple[int, bytes, bytes | None]]], order: list[int]) -> None:
        self.records = records
        self.order = order  # the partitions' records come back in this order
        self.positions: dict[int, int] = {}

    def assign(self, partitions: list) -> None:
        self.positions = {tp.partition: 0 for tp in partitions}

    def seek(self, tp: Any, offset: int) -> None:
        self.positions[tp.partition] = offset

    def pause(self, tp: Any) -> None:
        pass

    def highwater(self, tp: Any) -> int:
        return self.records[tp.partition][-1][0] + 1

    async def position(self, tp: Any) -> int:
        return self.positions[tp.partition]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        batch = {}
        for p in self.order:
            if p in self.positions:
                fresh = [r for r in self.records[p] if r[0] >= self.positions[p]]
                if fresh:
                    batch[TopicPartition("deferred", p)] = [SimpleNamespace(offset=o, key=k, value=v) for o, k, v in fresh]
                    self.positions[p] = fresh[-1][0] + 1
        return batch


def record(offset: int, n: int) -> tuple[int, bytes, bytes]:
    return (offset, f"p-{n}".encode(), RAW.replace(b'"p-0"', f'"p-{n}"'.encode()).replace(b'"u"', f'"u-{n}"'.encode()))


async def test_a_catch_up_whose_first_post_finds_no_room_keeps_that_partition_spilled_from_it() -> None:
    deferred = await loaded(max_posts=2)
    # Two posts wait unindexed in each partition; the index has room for two.
    deferred.reader = FakeTopic({0: [record(10, 0), record(11, 1)], 1: [record(20, 2), record(21, 3)]}, order=[1, 0])  # type: ignore[assignment]
    deferred._spill = {0: 10, 1: 20}
    await deferred.tick(ready=True)
    # Partition 1's posts took the room: partition 0's first one found none, it is still spilled from there.
    assert deferred.index.count == 2 and deferred.index.offset_of(1, "p-2") == 20
    assert deferred._spill == {0: 10}
    assert gauge("consentry_ingest_deferred_unindexed") == 2
