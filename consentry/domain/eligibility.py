"""The contract's eligibility rule as one pure function.

A post is accepted for training only if its user has no active objection now and had
none at the post's `created_at`, it is public, and its author is not a minor.
"""

from __future__ import annotations

from enum import Enum

from consentry.events import Interval, Post


class Decision(str, Enum):
    ACCEPT = "accepted"
    OBJECTED = "objected"
    MINOR = "minor"
    NOT_PUBLIC = "not_public"


def objected_at(intervals: tuple[Interval, ...], at_us: int) -> bool:
    return any(start <= at_us and (end is None or at_us < end) for start, end in intervals)


def decide(post: Post, intervals: tuple[Interval, ...], now_us: int) -> Decision:
    if intervals:
        for start, end in intervals:
            if end is None or end > now_us:  # active now
                return Decision.OBJECTED
            if start <= post.created_at_us < end:  # active when the post was written
                return Decision.OBJECTED
    if post.author_is_minor:
        return Decision.MINOR
    if post.visibility != "public":
        return Decision.NOT_PUBLIC
    return Decision.ACCEPT
