"""The contract's eligibility rule, case by case."""

from __future__ import annotations

import pytest

from consentry.domain.eligibility import decide, objected_at
from consentry.domain.model import Decision
from consentry.domain.model import Post

NOW = 1_000_000_000
H = 3_600_000_000  # one hour in microseconds


def post(created: int, visibility: str = "public", minor: bool = False) -> Post:
    return Post("p", "u", created, visibility, "text", None, None, minor)


@pytest.mark.parametrize(
    ("intervals", "created", "visibility", "minor", "expected"),
    [
        # no objection ever
        ((), NOW - H, "public", False, Decision.ACCEPT),
        ((), NOW - H, "friends", False, Decision.NOT_PUBLIC),
        ((), NOW - H, "private", False, Decision.NOT_PUBLIC),
        ((), NOW - H, "public", True, Decision.MINOR),
        # an active objection drops every post, whenever it was written
        (((NOW - 2 * H, None),), NOW - 3 * H, "public", False, Decision.OBJECTED),
        (((NOW - 2 * H, None),), NOW - H, "public", False, Decision.OBJECTED),
        (((NOW - 2 * H, None),), NOW + H, "public", False, Decision.OBJECTED),
        # a closed objection drops only the posts written while it was active
        (((NOW - 3 * H, NOW - H),), NOW - 4 * H, "public", False, Decision.ACCEPT),
        (((NOW - 3 * H, NOW - H),), NOW - 3 * H, "public", False, Decision.OBJECTED),  # start is inclusive
        (((NOW - 3 * H, NOW - H),), NOW - 2 * H, "public", False, Decision.OBJECTED),
        (((NOW - 3 * H, NOW - H),), NOW - H, "public", False, Decision.ACCEPT),  # end is exclusive
        (((NOW - 3 * H, NOW - H),), NOW, "public", False, Decision.ACCEPT),
        # several intervals
        (((NOW - 5 * H, NOW - 4 * H), (NOW - 2 * H, NOW - H)), NOW - 3 * H, "public", False, Decision.ACCEPT),
        (((NOW - 5 * H, NOW - 4 * H), (NOW - 2 * H, NOW - H)), NOW - 90 * 60_000_000, "public", False, Decision.OBJECTED),
        # a withdrawal dated in the future keeps the objection active now
        (((NOW - H, NOW + H),), NOW - 2 * H, "public", False, Decision.OBJECTED),
        # an objection outweighs the other reasons (it is what the person asked)
        (((NOW - H, None),), NOW, "private", True, Decision.OBJECTED),
    ],
)
def test_decide(intervals, created, visibility, minor, expected) -> None:  # type: ignore[no-untyped-def]
    assert decide(post(created, visibility, minor), intervals, NOW) is expected


def test_objected_at_boundaries() -> None:
    intervals = ((10, 20), (30, None))
    assert [objected_at(intervals, t) for t in (9, 10, 19, 20, 29, 30, 10**12)] == [False, True, True, False, False, True, True]
