"""The contract's eligibility rule as pure functions.

A post is accepted for training only if its user has no active objection now and had
none at the post's `created_at`, it is public, its author is not a minor, and, where a
notice is required, the author's first notice was sent at least the grace period ago.

A post that fails only the notice rule is DEFERRED, not dropped: ingest holds it and
decides it again when the grace period ends (`release_at_us`), with `decide_release`,
which also drops it if the author objected at any time since the post was written.
"""

from __future__ import annotations

from consentry.domain.model import NO_NOTICES, Decision, Interval, NoticeFacts, Post, Visibility
from consentry.domain.notices import NoticePolicy, requires_notice


# The members the rule returns and compares, as module constants: an enum member read through
# its class costs a descriptor call on Python 3.11 (~0.1 µs each, per post on ingest's hot path).
_ACCEPT, _OBJECTED, _MINOR, _NOT_PUBLIC, _DEFERRED = Decision.ACCEPT, Decision.OBJECTED, Decision.MINOR, Decision.NOT_PUBLIC, Decision.DEFERRED
_PUBLIC = Visibility.PUBLIC


def objected_at(intervals: tuple[Interval, ...], at_us: int) -> bool:
    return any(start <= at_us and (end is None or at_us < end) for start, end in intervals)


def decide(
    post: Post,
    intervals: tuple[Interval, ...],
    now_us: int,
    notices: NoticeFacts = NO_NOTICES,
    policy: NoticePolicy | None = None,
) -> Decision:
    """The rule, first failing reason wins. `policy` None: the notice rule is off."""
    return decide_values(intervals, post.created_at_us, post.author_is_minor, post.visibility, post.country, now_us, notices, policy)


def decide_values(
    intervals: tuple[Interval, ...],
    created_at_us: int | None,
    author_is_minor: bool,
    visibility: str,
    country: str | None,
    now_us: int,
    notices: NoticeFacts = NO_NOTICES,
    policy: NoticePolicy | None = None,
) -> Decision:
    """`decide` on a post's values (ingest's hot path builds no Post). `created_at_us` is read
    only when there are intervals: None is allowed without them."""
    if intervals:
        for start, end in intervals:
            if end is None or end > now_us:  # active now
                return _OBJECTED
            if start <= created_at_us < end:  # type: ignore[operator]  # active when the post was written
                return _OBJECTED
    if author_is_minor:
        return _MINOR
    if visibility != _PUBLIC:
        return _NOT_PUBLIC
    if policy is not None and requires_notice(country, notices, policy):
        first = notices.first_sent_us
        if first is None or first + policy.grace_us > now_us:
            return _DEFERRED
    return _ACCEPT


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
