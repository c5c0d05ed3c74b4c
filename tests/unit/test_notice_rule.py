"""The notice rule, as timelines: when a user was told, where they are, when they objected,
and what becomes of their posts. Days are counted from day 0 (the post is written on day 10
unless said otherwise); the grace period is 30 days; notices are required in the EU/EEA."""

from __future__ import annotations

import pytest

from consentry.domain.eligibility import decide, decide_release
from consentry.domain.model import Decision
from consentry.domain.notices import EU_EEA, NoticePolicy, release_at_us, requires_notice
from consentry.domain.model import NO_NOTICES, notice_facts, NoticeFacts, Post

D = 86_400_000_000  # a day in microseconds
POLICY = NoticePolicy(grace_us=30 * D, jurisdictions=EU_EEA)


def post(country: str | None = "FR", created_day: float = 10, visibility: str = "public", minor: bool = False) -> Post:
    return Post("p-1", "u-1", int(created_day * D), visibility, "text", "fr", country, minor)


def told(*notices: tuple[float, str]) -> NoticeFacts:
    """Notices sent on these days, to these countries."""
    return notice_facts((int(day * D) for day, _c in notices), (c for _d, c in notices))


def objected(*spans: tuple[float, float | None]) -> tuple[tuple[int, int | None], ...]:
    return tuple((int(start * D), None if end is None else int(end * D)) for start, end in spans)


@pytest.mark.parametrize(
    ("story", "the_post", "notices", "intervals", "now_day", "expected"),
    [
        # A French user told on day 5: the grace period ends on day 35.
        ("told on day 5, seen on day 20: waits", post("FR"), told((5, "FR")), (), 20, Decision.DEFERRED),
        ("told on day 5, seen on day 34.99: still waits", post("FR"), told((5, "FR")), (), 34.99, Decision.DEFERRED),
        ("told on day 5, seen on day 35: grace over to the microsecond", post("FR"), told((5, "FR")), (), 35, Decision.ACCEPT),
        ("told on day 5, seen on day 90", post("FR"), told((5, "FR")), (), 90, Decision.ACCEPT),
        ("the first notice counts, not the latest", post("FR"), told((5, "FR"), (30, "FR")), (), 36, Decision.ACCEPT),
        ("a post written before the notice is held like any other", post("FR", created_day=1), told((5, "FR")), (), 20, Decision.DEFERRED),
        ("never told, in France: waits for a notice", post("FR"), NO_NOTICES, (), 400, Decision.DEFERRED),
        # Where the rule applies.
        ("an American post of a user never told: flows at once", post("US"), NO_NOTICES, (), 11, Decision.ACCEPT),
        ("a Norwegian post (EEA, not EU) waits", post("NO"), told((5, "NO")), (), 20, Decision.DEFERRED),
        ("a post with no country, user told in Germany: the notice's country decides", post(None), told((5, "DE")), (), 20, Decision.DEFERRED),
        ("a post with no country, user told in the US: no notice needed", post(None), told((5, "US")), (), 20, Decision.ACCEPT),
        ("an American post of a user once told in Italy: the notice's country decides", post("US"), told((5, "IT")), (), 20, Decision.DEFERRED),
        ("no country and no notice: nothing says where they are, fail closed", post(None), NO_NOTICES, (), 400, Decision.DEFERRED),
        # The earlier rules come first: a post failing them is dropped, not deferred.
        ("objected now: dropped even within the grace period", post("FR"), told((5, "FR")), objected((15, None)), 20, Decision.OBJECTED),
        ("a minor's post: dropped", post("FR", minor=True), told((5, "FR")), (), 20, Decision.MINOR),
        ("a friends-only post: dropped", post("FR", visibility="friends"), NO_NOTICES, (), 20, Decision.NOT_PUBLIC),
        ("an objection withdrawn before the post does not hold it back", post("FR"), told((5, "FR")), objected((1, 2)), 40, Decision.ACCEPT),
    ],
)
def test_first_decision(story: str, the_post: Post, notices: NoticeFacts, intervals, now_day: float, expected: Decision) -> None:  # type: ignore[no-untyped-def]
    assert decide(the_post, intervals, int(now_day * D), notices, POLICY) is expected, story


@pytest.mark.parametrize(
    ("story", "notices", "intervals", "now_day", "expected"),
    [
        # The post (day 10, France) was deferred; the user was told on day 5: released on day 35...
        ("nothing happened meanwhile: released", told((5, "FR")), (), 35, Decision.ACCEPT),
        ("checked early (a consent change): still deferred", told((5, "FR")), (), 25, Decision.DEFERRED),
        # ...unless they objected meanwhile: then it is dropped, never stored.
        ("objected on day 20, still objecting", told((5, "FR")), objected((20, None)), 35, Decision.OBJECTED),
        ("objected on day 20, withdrew on day 25: dropped all the same", told((5, "FR")), objected((20, 25)), 35, Decision.OBJECTED),
        ("objected and withdrew before the post was written: released", told((5, "FR")), objected((6, 8)), 35, Decision.ACCEPT),
        ("withdrew exactly when the post was written (end is exclusive): released", told((5, "FR")), objected((6, 10)), 35, Decision.ACCEPT),
        ("objected the moment it is released: dropped", told((5, "FR")), objected((35, None)), 35, Decision.OBJECTED),
        # A user never told is decided again when their notice arrives.
        ("a notice arrives on day 12: waits until day 42", told((12, "FR")), (), 41, Decision.DEFERRED),
        ("a notice arrives on day 12: released on day 42", told((12, "FR")), (), 42, Decision.ACCEPT),
        ("an imported notice from long ago: released at once", told((-100, "FR")), (), 12, Decision.ACCEPT),
    ],
)
def test_release(story: str, notices: NoticeFacts, intervals, now_day: float, expected: Decision) -> None:  # type: ignore[no-untyped-def]
    assert decide_release(post("FR"), intervals, int(now_day * D), notices, POLICY) is expected, story


def test_the_release_time_is_the_first_notice_plus_the_grace_period() -> None:
    assert release_at_us(told((5, "FR"), (2, "FR")), POLICY) == 32 * D
    assert release_at_us(NO_NOTICES, POLICY) is None


def test_requires_notice_table() -> None:
    rows = [
        ("FR", NO_NOTICES, True),
        ("US", NO_NOTICES, False),
        (None, NO_NOTICES, True),
        (None, told((1, "US")), False),
        ("US", told((1, "US"), (2, "PL")), True),
        ("CH", told((1, "CH")), False),  # Switzerland is neither EU nor EEA
    ]
    assert [requires_notice(c, n, POLICY) for c, n, _ in rows] == [expected for _c, _n, expected in rows]


def test_with_no_jurisdictions_only_users_nothing_is_known_about_need_a_notice() -> None:
    nowhere = NoticePolicy(30 * D, frozenset())
    assert decide(post("FR"), (), 20 * D, NO_NOTICES, nowhere) is Decision.ACCEPT
    assert decide(post(None), (), 20 * D, NO_NOTICES, nowhere) is Decision.DEFERRED


def test_without_a_policy_the_notice_rule_is_off() -> None:
    assert decide(post(None), (), 20 * D) is Decision.ACCEPT
    assert decide_release(post("FR"), objected((12, 13)), 20 * D) is Decision.OBJECTED


def test_the_default_jurisdictions_are_the_eu_and_the_eea() -> None:
    assert len(EU_EEA) == 30 and {"FR", "DE", "IE", "IS", "LI", "NO"} <= EU_EEA and not {"GB", "CH", "US"} & EU_EEA
