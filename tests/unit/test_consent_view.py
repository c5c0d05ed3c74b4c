"""Ingest's consent view across a rebalance: a home handed back keeps what was read of it (its
reading goes on where it stopped); every other home starts empty; none is ready."""

from __future__ import annotations

from consentry.domain.consent import apply_notice
from consentry.domain.model import Notice
from consentry.wire import encode_consent_state
from services.ingest.consent_view import ConsentView


def notified(user: str) -> bytes:
    return encode_consent_state(apply_notice(None, Notice(f"n-{user}", user, "v1", "email", 1_000, "FR"), 2_000))  # type: ignore[arg-type]


def test_a_home_handed_back_keeps_what_was_read_of_it_and_the_others_start_empty() -> None:
    view = ConsentView()
    view.reset({0, 1})
    view.apply(0, b"ada", notified("ada"))
    view.apply(1, b"bob", notified("bob"))
    view.ready = {0, 1}

    view.reset({1, 2}, keep={1})
    assert view.partitions == {1, 2} and view.ready == set()
    assert view.notices(1, "bob").first_sent_us == 1_000  # kept: read on from where it was
    assert view.user_count() == 1  # ada's home went elsewhere; home 2 starts empty

    view.reset({1})
    assert view.user_count() == 0  # nothing kept unless asked
