"""The deferred posts' memory bound: `DeferredPosts.tick` says when the posts fill it and when
they are under 90 % of it again; the worker alone pauses and resumes its consumer."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from consentry.domain.model import Post
from services.ingest.consent_view import ConsentView
from services.ingest.deferred import POST_OVERHEAD_BYTES, DeferredPosts
from services.ingest.settings import IngestSettings

RAW = b'{"post_id": "p-0", "user_id": "u", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "hi"}'
SIZE = len(RAW) + POST_OVERHEAD_BYTES  # what each post below counts for


class FakeSender:
    def __init__(self) -> None:
        self.appended: list[tuple[str, int, bytes]] = []

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.appended.append((topic, partition, key or b""))

    async def flush(self) -> None:
        pass


class FakeReader:
    """The deferred topic's reader, for an assignment of no home partition."""

    def assign(self, partitions: list) -> None:
        pass


async def loaded(max_bytes: int) -> DeferredPosts:
    view = ConsentView()
    view.reset({0})
    deferred = DeferredPosts(IngestSettings(deferred_max_bytes=max_bytes), view)
    deferred.sender = FakeSender()  # type: ignore[assignment]
    deferred.reader = FakeReader()  # type: ignore[assignment]
    await deferred.assign(set())
    assert await deferred.load()
    return deferred


def full_gauge() -> float | None:
    return REGISTRY.get_sample_value("consentry_ingest_deferred_full")


@pytest.mark.parametrize("ready", [True, False])
async def test_under_the_bound_tick_lets_the_worker_read(ready: bool) -> None:
    deferred = await loaded(max_bytes=10 * SIZE)
    deferred.hold(0, Post("p-0", "u", 0, "public", "hi", None, None, False), RAW)
    assert await deferred.tick(ready=ready) is False


async def test_tick_says_full_beyond_the_bound_and_not_until_under_ninety_percent_of_it() -> None:
    deferred = await loaded(max_bytes=int(4.2 * SIZE))
    for n in range(5):
        deferred.hold(0, Post(f"p-{n}", "u", n, "public", "hi", None, None, False), RAW)
    assert deferred.index.bytes == 5 * SIZE
    assert await deferred.tick(ready=True) is True
    assert full_gauge() == 1
    assert await deferred.tick(ready=False) is True  # held partitions change nothing

    deferred.index.remove((0, "u"), "p-0")  # 4 posts: under the bound, not under 90 % of it
    assert await deferred.tick(ready=True) is True
    deferred.index.remove((0, "u"), "p-1")
    assert await deferred.tick(ready=True) is False
    assert full_gauge() == 0


async def test_a_new_assignment_starts_not_full() -> None:
    deferred = await loaded(max_bytes=SIZE)
    for n in range(2):
        deferred.hold(0, Post(f"p-{n}", "u", n, "public", "hi", None, None, False), RAW)
    assert await deferred.tick(ready=True) is True
    await deferred.assign(set())
    assert await deferred.tick(ready=False) is False
