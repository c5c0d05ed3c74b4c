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
