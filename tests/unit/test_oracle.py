"""The reliability tests' oracle agrees with the consent domain on generated histories
(two formulations of one rule: if they disagree, one of them is wrong)."""

from __future__ import annotations

import random

from consentry.domain.consent import derive_intervals
from consentry.domain.eligibility import decide
from consentry.domain.model import Decision
from consentry.domain.model import HistoryEntry, Post
from tests.reliability.oracle import Event, PostFacts, eligible

NOW = 1_000_000


def test_oracle_and_domain_agree_on_random_histories() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        events = [Event(f"o{i}", rng.choice(["object", "withdraw"]), rng.randrange(0, NOW, 50)) for i in range(rng.randrange(0, 6))]
        history = tuple(sorted((HistoryEntry(e.objection_id, e.kind, e.received_at_us, "web") for e in events), key=lambda h: (h.received_at_us, h.objection_id)))
        intervals = derive_intervals(history)
        created = rng.choice([rng.randrange(0, NOW), *(e.received_at_us + d for e in events for d in (-1, 0, 1))] or [5])
        post = PostFacts("p", "u", created, True, False)
        domain = decide(Post("p", "u", created, "public", "t"), intervals, NOW) is Decision.ACCEPT
        assert eligible(post, events) == domain, (events, created, intervals)


def test_oracle_and_domain_agree_on_the_notice_rule() -> None:
    """Countries in and out of the EU/EEA, none, several notices, the grace period's edge."""
    from consentry.domain.model import notice_facts
    from consentry.domain.notices import EU_EEA, NoticePolicy
    from tests.reliability.oracle import EU_EEA as ORACLE_EU_EEA
    from tests.reliability.oracle import Notice

    assert ORACLE_EU_EEA == EU_EEA  # the contract's default jurisdictions, written twice
    grace = 30 * 86_400_000_000
    now = 100 * 86_400_000_000
    policy = NoticePolicy(grace, EU_EEA)
    rng = random.Random(8)
    for _ in range(5_000):
        notices = [Notice(f"n{i}", rng.choice([now - grace, now - grace + 1, now - grace - 1, rng.randrange(0, now)]),
                          rng.choice(["FR", "DE", "US", "JP", "NO"])) for i in range(rng.choice([0, 0, 1, 1, 2, 3]))]
        country = rng.choice(["FR", "IS", "US", "BR", None])
        post = PostFacts("p", "u", now - 5, True, False, country)
        facts = notice_facts([n.sent_at_us for n in notices], [n.country for n in notices])
        domain = decide(Post("p", "u", now - 5, "public", "t", country=country), (), now, facts, policy) is Decision.ACCEPT
        assert eligible(post, [], notices, now, grace) == domain, (notices, country)
