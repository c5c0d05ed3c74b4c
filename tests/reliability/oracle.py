"""The contract's eligibility rule, written again from the contract's words, for checking.

An objection event opens an objection, a withdrawal closes it, in the order of their
`received_at` (ties by objection_id, as the consent table sorts them). So at any instant
`t` a user is objecting exactly when the latest of their events at or before `t` is an
objection, and objects "now" when their latest event of all is one. Written this way, not
as intervals like consentry.domain.consent, so the check does not share its code or its
mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    objection_id: str
    kind: str  # object | withdraw
    received_at_us: int


@dataclass(frozen=True)
class PostFacts:
    post_id: str
    user_id: str
    created_at_us: int
    public: bool
    minor: bool


def _order(event: Event) -> tuple[int, str]:
    return (event.received_at_us, event.objection_id)


def objecting_at(history: list[Event], at_us: int) -> bool:
    before = [e for e in history if e.received_at_us <= at_us]
    return bool(before) and max(before, key=_order).kind == "object"


def objecting_now(history: list[Event]) -> bool:
    return bool(history) and max(history, key=_order).kind == "object"


def eligible(post: PostFacts, history: list[Event]) -> bool:
    return post.public and not post.minor and not objecting_now(history) and not objecting_at(history, post.created_at_us)
