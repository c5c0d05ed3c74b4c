"""The deferred posts' index: who is due when, without scanning every post on each tick."""

from __future__ import annotations

from consentry.domain.model import Post
from services.ingest.deferred import DeferredIndex, parse_deferred


def post(post_id: str, user: str, created: int = 0) -> Post:
    return Post(post_id, user, created, "public", "text", None, "FR", False)


def test_users_come_due_in_time_order_and_only_once_due() -> None:
    index = DeferredIndex()
    for user, at in (("late", 300), ("early", 100), ("middle", 200)):
        index.add(0, post(f"{user}-1", user), 10)
        index.schedule((0, user), at)

    assert index.pop_due(50, limit=10) == []
    assert index.pop_due(200, limit=10) == [(0, "early"), (0, "middle")]
    assert index.next_due() == 300
    assert index.pop_due(10_000, limit=10) == [(0, "late")]
    assert index.pop_due(10_000, limit=10) == []  # popped users are no longer scheduled


def test_rescheduling_invalidates_the_earlier_time() -> None:
    index = DeferredIndex()
    index.add(1, post("p-1", "u"), 10)
    index.schedule((1, "u"), 100)
    index.schedule((1, "u"), 500)  # a notice changed: later now

    assert index.pop_due(400, limit=10) == []
    assert index.pop_due(500, limit=10) == [(1, "u")]


def test_a_user_without_a_notice_is_not_scheduled_until_told() -> None:
    index = DeferredIndex()
    index.add(0, post("p-1", "u"), 10)
    index.schedule((0, "u"), None)
    assert not index.is_scheduled((0, "u")) and index.pop_due(10**18, limit=10) == []
    assert (0, "u") in index and index.users == 1


def test_at_most_limit_users_per_turn() -> None:
    index = DeferredIndex()
    for n in range(5):
        index.add(0, post(f"p-{n}", f"u-{n}"), 10)
        index.schedule((0, f"u-{n}"), n)
    assert len(index.pop_due(100, limit=3)) == 3
    assert len(index.pop_due(100, limit=3)) == 2


def test_counts_and_bytes_follow_adds_and_removals_and_a_repeated_post_counts_once() -> None:
    index = DeferredIndex()
    index.add(0, post("p-1", "u", created=2), 100)
    index.add(0, post("p-2", "u", created=1), 50)
    index.add(0, post("p-1", "u", created=2), 100)  # the producer sent it twice
    assert (index.count, index.bytes, index.users) == (2, 150, 1)
    assert [p.post_id for p in index.posts_of((0, "u"))] == ["p-2", "p-1"]  # oldest first

    index.schedule((0, "u"), 10)
    index.remove((0, "u"), "p-1")
    index.remove((0, "u"), "p-1")  # already gone: nothing happens
    assert (index.count, index.bytes) == (1, 50)
    index.remove((0, "u"), "p-2")
    assert (index.count, index.bytes, index.users) == (0, 0, 0)
    assert not index.is_scheduled((0, "u")) and index.pop_due(100, limit=10) == []


def test_the_heap_stays_proportional_to_the_users_scheduled() -> None:
    index = DeferredIndex()
    index.add(0, post("p-1", "u"), 10)
    for at in range(5_000):
        index.schedule((0, "u"), at)
    assert len(index._heap) <= 2 * 1 + 1024 + 1


def test_a_deferred_record_is_the_post_s_own_bytes() -> None:
    raw = b'{"post_id": "p-1", "user_id": "u-1", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "hi", "country": "FR"}'
    parsed = parse_deferred(raw)
    assert isinstance(parsed, Post) and (parsed.post_id, parsed.user_id, parsed.country) == ("p-1", "u-1", "FR")
    assert parse_deferred(b"{broken").code == "invalid_json"  # type: ignore[union-attr]
