"""The deferred posts' index: who is due when, without scanning every post on each tick, and
where each post is in consentry.posts-deferred (never the post itself)."""

from __future__ import annotations

import tracemalloc

from consentry.domain.model import Post
from services.ingest.deferred import ENTRY_BYTES, PENDING, DeferredIndex, parse_deferred


def test_users_come_due_in_time_order_and_only_once_due() -> None:
    index = DeferredIndex()
    for user, at in (("late", 300), ("early", 100), ("middle", 200)):
        index.put(0, user, f"{user}-1", at)
        index.schedule((0, user), at)

    assert index.pop_due(50, limit=10) == []
    assert index.pop_due(200, limit=10) == [(0, "early"), (0, "middle")]
    assert index.next_due() == 300
    assert index.pop_due(10_000, limit=10) == [(0, "late")]
    assert index.pop_due(10_000, limit=10) == []  # popped users are no longer scheduled


def test_rescheduling_invalidates_the_earlier_time() -> None:
    index = DeferredIndex()
    index.put(1, "u", "p-1", 10)
    index.schedule((1, "u"), 100)
    index.schedule((1, "u"), 500)  # a notice changed: later now

    assert index.pop_due(400, limit=10) == []
    assert index.pop_due(500, limit=10) == [(1, "u")]


def test_a_user_without_a_notice_is_not_scheduled_until_told() -> None:
    index = DeferredIndex()
    index.put(0, "u", "p-1", 10)
    index.schedule((0, "u"), None)
    assert not index.is_scheduled((0, "u")) and index.pop_due(10**18, limit=10) == []
    assert (0, "u") in index and index.users == 1


def test_at_most_limit_users_per_turn() -> None:
    index = DeferredIndex()
    for n in range(5):
        index.put(0, f"u-{n}", f"p-{n}", n)
        index.schedule((0, f"u-{n}"), n)
    assert len(index.pop_due(100, limit=3)) == 3
    assert len(index.pop_due(100, limit=3)) == 2


def test_counts_follow_puts_and_removals_and_a_repeated_post_counts_once() -> None:
    index = DeferredIndex()
    index.put(0, "u", "p-1", 7)
    index.put(0, "u", "p-2", 3)
    index.put(0, "u", "p-1", 12)  # the producer sent it twice: its later record
    assert (index.count, index.users) == (2, 1)
    assert index.posts_of((0, "u")) == [("p-2", 3), ("p-1", 12)]  # in the order deferred

    index.schedule((0, "u"), 10)
    index.remove(0, "p-1")
    index.remove(0, "p-1")  # already gone: nothing happens
    assert index.count == 1
    index.remove(0, "p-2")
    assert (index.count, index.users) == (0, 0)
    assert not index.is_scheduled((0, "u")) and index.pop_due(100, limit=10) == []


def test_a_later_record_of_a_post_wins_and_a_tombstone_removes_only_older_records() -> None:
    index = DeferredIndex()
    index.put(0, "u", "p-1", 20)
    index.put(0, "u", "p-1", 5)  # an older record read again: ignored
    assert index.offset_of(0, "p-1") == 20
    assert index.remove(0, "p-1", before=15) is None  # a tombstone older than the record
    assert index.remove(0, "p-1", before=21) == (0, "u")
    assert index.count == 0


def test_a_post_being_appended_is_indexed_pending_until_acknowledged() -> None:
    index = DeferredIndex()
    index.put(2, "u", "p-1", PENDING)
    index.put(2, "u", "p-1", 4)  # read from the topic meanwhile: the append in flight is later
    assert index.offset_of(2, "p-1") == PENDING and index.remove(2, "p-1", before=9) is None
    index.acknowledged(2, "p-1", 9)
    assert index.offset_of(2, "p-1") == 9 and index.posts_of((2, "u")) == [("p-1", 9)]


def test_a_user_with_many_posts_keeps_them_all_and_loses_them_one_by_one() -> None:
    index = DeferredIndex()
    for n in range(40):
        index.put(0, "busy", f"p-{n}", n)
    assert [p for p, _ in index.posts_of((0, "busy"))] == [f"p-{n}" for n in range(40)]
    for n in range(39):
        index.remove(0, f"p-{n}")
    assert index.posts_of((0, "busy")) == [("p-39", 39)] and (index.count, index.users) == (1, 1)


def test_an_entry_costs_about_entry_bytes_and_holds_no_post() -> None:
    """The deferred-bytes gauge is an estimate from the entry count: it must be near the truth,
    whatever the posts' size (their bodies stay in Kafka)."""
    n = 20_000
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        index = DeferredIndex()
        for i in range(n):  # the ids as the loader parses them out of each post: kept by the index
            index.put(i % 8, f"user-{i:08d}", f"post-{i:012d}", 10**9 + i)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_entry = (after - before) / n
    assert index.count == n
    assert 0.5 * ENTRY_BYTES < per_entry < 1.5 * ENTRY_BYTES, per_entry


def test_the_heap_stays_proportional_to_the_users_scheduled() -> None:
    index = DeferredIndex()
    index.put(0, "u", "p-1", 10)
    for at in range(5_000):
        index.schedule((0, "u"), at)
    assert len(index._heap) <= 2 * 1 + 1024 + 1


def test_a_deferred_record_is_the_post_s_own_bytes() -> None:
    raw = b'{"post_id": "p-1", "user_id": "u-1", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "hi", "country": "FR"}'
    parsed = parse_deferred(raw)
    assert isinstance(parsed, Post) and (parsed.post_id, parsed.user_id, parsed.country) == ("p-1", "u-1", "FR")
    assert parse_deferred(b"{broken").code == "invalid_json"  # type: ignore[union-attr]
