"""The sink applies a batch as if each message were applied in turn."""

from __future__ import annotations

from consentry.domain.model import Post, PurgeMarker
from consentry.wire import encode_purge_marker, encode_training_post
from consentry.domain import purge as purge_planning
from consentry.wire import parse_training_message


def plan_batch(values: list[bytes]) -> purge_planning.Plan:
    """The sink's planning of raw training.posts values: parse each, then plan."""
    return purge_planning.plan_batch([parse_training_message(v) for v in values])


def post(post_id: str, user: str) -> bytes:
    return encode_training_post(Post(post_id, user, 0, "public", "t"), 1)


def purge(user: str, *ids: str, at: int = 5) -> bytes:
    return encode_purge_marker(PurgeMarker(user, ids, at))


def test_posts_before_their_users_purge_are_dropped_posts_after_are_kept() -> None:
    plan = plan_batch([post("a1", "alice"), post("b1", "bob"), purge("alice", "o1"), post("a2", "alice"), post("b2", "bob")])
    assert [r["post_id"] for r in plan.appends] == ["b1", "a2", "b2"]
    assert list(plan.purges) == ["alice"]
    assert plan.purges["alice"].objection_ids == ("o1",)


def test_several_markers_for_one_user_merge() -> None:
    plan = plan_batch([purge("alice", "o1", at=9), post("a1", "alice"), purge("alice", "o2", "o1", at=7)])
    assert plan.appends == []
    assert plan.purges["alice"].objection_ids == ("o1", "o2")
    assert plan.purges["alice"].marked_at_us == 7


def test_duplicate_post_ids_in_a_batch_keep_the_first_surviving_copy() -> None:
    plan = plan_batch([post("a1", "alice"), purge("alice"), post("a1", "alice"), post("a1", "alice")])
    assert [r["post_id"] for r in plan.appends] == ["a1"]


def test_unreadable_messages_are_reported_not_applied() -> None:
    plan = plan_batch([b"garbage", b'{"type": "other"}', post("a1", "alice")])
    assert [i.code for i in plan.invalid] == ["invalid_json", "bad_value"]
    assert [r["post_id"] for r in plan.appends] == ["a1"]
