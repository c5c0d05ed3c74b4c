"""bench/latency.py's reading of the consent changelog (pure: records given as a list)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.latency import first_applied


def record(user: str, value: bytes, timestamp_ms: int) -> SimpleNamespace:
    return SimpleNamespace(key=user.encode(), value=value, timestamp=timestamp_ms)


def test_the_seeded_row_before_the_objection_is_not_when_it_was_applied() -> None:
    # The run seeds every user's row (told long ago) before anyone objects: the objector's
    # first changelog record is that row, 33 s before the objection; it made p50 negative.
    records = [
        record("u-1", b'{"user_id":"u-1","history":[],"notices":[{"notice_id":"n-1"}]}', 1_000_000),
        record("u-2", b'{"user_id":"u-2","history":[]}', 1_000_001),
        record("u-1", b'{"user_id":"u-1","history":[{"objection_id":"o-1","enforced_at":null}]}', 1_033_000),
        record("u-1", b'{"user_id":"u-1","history":[{"objection_id":"o-1","enforced_at":"..."}]}', 1_033_100),
    ]
    assert first_applied(records, {"u-1": "o-1", "u-2": "o-2"}) == {"u-1": 1_033_000_000}, "the first row holding the objection"
