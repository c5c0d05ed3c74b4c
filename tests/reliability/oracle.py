"""The contract's eligibility rule, written again from the contract's words, for checking.

An objection event opens an objection, a withdrawal closes it, in the order of their
`received_at` (ties by objection_id, as the consent table sorts them). So at any instant
`t` a user is objecting exactly when the latest of their events at or before `t` is an
objection, and objects "now" when their latest event of all is one. Written this way, not
as intervals like consentry.domain.consent, so the check does not share its code or its
mistakes.

The notice rule (contract, "Eligibility" and "Notices"), on by default: where the author's
country requires a notice (by default the EU/EEA), the author's first notice was sent at
least the grace period (default 30 days) ago. The author's country is the post's `country`
or any country a notice went to; a post with no country of a user never told anything is
held (fail closed: nothing says the rule does not apply).

What the oracle does not decide alone is *when* the system had to know: see `required`.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_US = 86_400_000_000
GRACE_US = 30 * DAY_US  # CONSENTRY_NOTICE_GRACE's default
# The EU's 27 member states, and Iceland, Liechtenstein and Norway (the EEA).
EU_EEA = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU", "MT", "NL",
    "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
})


@dataclass(frozen=True)
class Event:
    objection_id: str
    kind: str  # object | withdraw
    received_at_us: int


@dataclass(frozen=True)
class Notice:
    notice_id: str
    sent_at_us: int
    country: str


@dataclass(frozen=True)
class PostFacts:
    post_id: str
    user_id: str
    created_at_us: int
    public: bool
    minor: bool
    country: str | None = None


def _order(event: Event) -> tuple[int, str]:
    return (event.received_at_us, event.objection_id)


def objecting_at(history: list[Event], at_us: int) -> bool:
    before = [e for e in history if e.received_at_us <= at_us]
    return bool(before) and max(before, key=_order).kind == "object"


def objecting_now(history: list[Event]) -> bool:
    return bool(history) and max(history, key=_order).kind == "object"


def told_in_time(post: PostFacts, notices: list[Notice], now_us: int, grace_us: int = GRACE_US) -> bool:
    """The notice rule: no notice needed, or the first one was sent at least `grace_us` ago."""
    told_in = {n.country for n in notices}
    where = ({post.country} if post.country is not None else set()) | told_in
    if where and not where & EU_EEA:
        return True  # nowhere a notice is required
    return bool(notices) and min(n.sent_at_us for n in notices) + grace_us <= now_us


def eligible(post: PostFacts, history: list[Event], notices: list[Notice] | None = None, now_us: int = 0, grace_us: int = GRACE_US) -> bool:
    """`notices` None: the notice rule is off."""
    if not post.public or post.minor or objecting_now(history) or objecting_at(history, post.created_at_us):
        return False
    return notices is None or told_in_time(post, notices, now_us, grace_us)


def required(post: PostFacts, history: list[Event], applied_at_us: int, deliveries_us: list[int], notices: list[Notice] | None = None,
             now_us: int = 0) -> bool:
    """Must the post be in the table (exactly once)? When it is eligible under the user's final
    history and one of its deliveries was sent once every event of that history had been
    applied (`applied_at_us`: the latest `enforced_at` of the user's events; 0 without any).

    That is the contract's one allowance ("a post that arrives before a withdrawal has been
    applied may be dropped") and nothing more: before an event is applied ingest may decide
    with an older view (a withdrawn objection still active: dropped), and an objection's purge
    deletes every row of its user stored so far, eligible ones too. Sent after the last event
    was applied, a post is decided with the whole history and no purge marker follows it."""
    return eligible(post, history, notices, now_us) and any(sent > applied_at_us for sent in deliveries_us)
