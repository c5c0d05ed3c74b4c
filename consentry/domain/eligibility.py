"""The contract's eligibility rule as pure functions.

A post is accepted for training only if its user has no active objection now and had
none at the post's `created_at`, it is public, its author is not a minor, and, where a
notice is required, the author's first notice was sent at least the grace period ago.

A post that fails only the notice rule is DEFERRED, not dropped: ingest holds it and
decides it again when the grace period ends (`release_at_us`), with `decide_release`,
which also drops it if the author objected at any time since the post was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from consentry.events import NO_NOTICES, Interval, NoticeFacts, Post

# The EU's 27 member states and the other EEA states (Iceland, Liechtenstein, Norway).
EU_EEA = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO".split()
)


class Decision(str, Enum):
    ACCEPT = "accepted"
    OBJECTED = "objected"
    MINOR = "minor"
    NOT_PUBLIC = "not_public"
    DEFERRED = "deferred"  # not a drop: the post waits for its author's notice grace period


@dataclass(frozen=True, slots=True)
class NoticePolicy:
    """Where a notice is required (ISO country codes) and how long after the first notice a
    user's posts may be used."""

    grace_us: int
    jurisdictions: frozenset[str]


def objected_at(intervals: tuple[Interval, ...], at_us: int) -> bool:
    return any(start <= at_us and (end is None or at_us < end) for start, end in intervals)


def requires_notice(post_country: str | None, notices: NoticeFacts, policy: NoticePolicy) -> bool:
    """The post's country or any country a notice went to is in the jurisdictions; or nothing
    tells where the user is (no country, no notice): then fail closed."""
    if post_country is None and not notices.countries:
        return True
    return post_country in policy.jurisdictions or not notices.countries.isdisjoint(policy.jurisdictions)


def release_at_us(notices: NoticeFacts, policy: NoticePolicy) -> int | None:
    """When the grace period of the user's first notice ends; None while no notice was sent."""
    return None if notices.first_sent_us is None else notices.first_sent_us + policy.grace_us


def decide(
    post: Post,
    intervals: tuple[Interval, ...],
    now_us: int,
    notices: NoticeFacts = NO_NOTICES,
    policy: NoticePolicy | None = None,
) -> Decision:
    """The rule, first failing reason wins. `policy` None: the notice rule is off."""
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
    if policy is not None and requires_notice(post.country, notices, policy):
        first = notices.first_sent_us
        if first is None or first + policy.grace_us > now_us:
            return Decision.DEFERRED
    return Decision.ACCEPT


def objected_since(intervals: tuple[Interval, ...], since_us: int, now_us: int) -> bool:
    """Any objection interval overlapping [since, now]."""
    return any(start <= now_us and (end is None or end > since_us) for start, end in intervals)


def decide_release(
    post: Post,
    intervals: tuple[Interval, ...],
    now_us: int,
    notices: NoticeFacts = NO_NOTICES,
    policy: NoticePolicy | None = None,
) -> Decision:
    """Decide a deferred post again. Stricter than `decide` on purpose: an author who objected
    at any moment while the post waited (even if they withdrew since) gets it dropped."""
    if objected_since(intervals, post.created_at_us, now_us):
        return Decision.OBJECTED
    return decide(post, intervals, now_us, notices, policy)
