"""Notices: what a valid one is, how the consent table records them, what a person sees, and
which notice version an objection answered."""

from __future__ import annotations

import orjson
import pytest

from consentry.domain.consent import apply_notice, apply_objection, apply_receipt, user_status
from consentry.domain.model import ENFORCED, NO_NOTICES, Invalid, Notice, NoticeFacts, ObjectionEvent, Receipt
from consentry.wire import decode_consent_state, decode_enforcement_view, encode_consent_state, encode_notice, parse_notice
from consentry.timeutil import parse_duration_us, parse_rfc3339
from consentry.wire import status_to_dict

D = 86_400_000_000
T = 1_700_000_000_000_000


def status_document_of(user_id: str, state, now_us: int) -> dict:
    """The document `GET /v1/objections/me` shows."""
    return status_to_dict(user_status(user_id, state, now_us))


CONTRACT_NOTICE = {
    "notice_id": "n-1", "user_id": "u-42", "notice_version": "2025-05", "channel": "email",
    "sent_at": "2025-05-01T09:00:00Z", "country": "FR",
}


def notice(notice_id: str, day: float, version: str = "v1", country: str = "FR", channel: str = "email") -> Notice:
    return Notice(notice_id, "u-1", version, channel, T + int(day * D), country)


def objection(oid: str, day: float, kind: str = "object", notice_version: str | None = None) -> ObjectionEvent:
    return ObjectionEvent(oid, "u-1", kind, T + int(day * D), "web", None, notice_version)


# ------------------------------------------------------------------ the message


def test_the_contract_notice_is_read_and_written_back_as_is() -> None:
    parsed = parse_notice(orjson.dumps(CONTRACT_NOTICE))
    assert parsed == Notice("n-1", "u-42", "2025-05", "email", parse_rfc3339("2025-05-01T09:00:00Z"), "FR")
    assert orjson.loads(encode_notice(parsed)) == CONTRACT_NOTICE


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"notice_id": None}, "missing_field"),
        ({"user_id": 42}, "wrong_type"),
        ({"notice_version": ""}, "bad_value"),
        ({"channel": "sms"}, "bad_value"),
        ({"sent_at": "last Tuesday"}, "bad_timestamp"),
        ({"sent_at": "2025-05-01T09:00:00"}, "bad_timestamp"),  # no time zone
        ({"sent_at": None}, "missing_field"),
        ({"country": None}, "missing_field"),
        ({"country": "fr"}, "bad_value"),
        ({"country": "FRA"}, "bad_value"),
    ],
)
def test_a_bad_notice_says_why(change: dict, code: str) -> None:
    parsed = parse_notice(orjson.dumps({**CONTRACT_NOTICE, **change}))
    assert isinstance(parsed, Invalid) and parsed.code == code, parsed


def test_unreadable_notices_are_invalid_not_errors() -> None:
    assert parse_notice(None) == Invalid("empty", "message has no value")
    assert isinstance(parse_notice(b"{nope"), Invalid) and parse_notice(b"{nope").code == "invalid_json"
    assert parse_notice(b"[1]").code == "not_an_object"  # type: ignore[union-attr]


# ------------------------------------------------------------------ the consent table


def test_every_notice_is_recorded_once_sorted_by_when_it_was_sent() -> None:
    state = apply_notice(None, notice("n-2", 10, "v2", channel="in_app"), T)
    state = apply_notice(state, notice("n-1", 3, "v1"), T)
    again = apply_notice(state, notice("n-1", 3, "v1"), T + 5)
    assert again is state
    assert [(n.notice_id, n.notice_version, n.channel) for n in state.notices] == [("n-1", "v1", "email"), ("n-2", "v2", "in_app")]
    assert state.history == () and state.intervals == () and state.pending == ()


def test_notices_survive_objections_and_receipts() -> None:
    state = apply_notice(None, notice("n-1", 0), T)
    state = apply_objection(state, objection("o-1", 5), T)
    state = apply_receipt(state, Receipt(ENFORCED, "u-1", ("o-1",), T + 6 * D), T)
    assert state is not None and [n.notice_id for n in state.notices] == ["n-1"]
    assert state.history[0].enforced_at_us == T + 6 * D


def test_an_objection_records_the_notice_version_the_user_had_last_been_sent() -> None:
    state = apply_notice(None, notice("n-1", 0, "v1"), T)
    state = apply_notice(state, notice("n-2", 10, "v2"), T)
    state = apply_objection(state, objection("before-any", -1), T)
    state = apply_objection(state, objection("after-v1", 4, "withdraw"), T)
    state = apply_objection(state, objection("after-v2", 12), T)
    state = apply_objection(state, objection("named", 13, notice_version="v9"), T)
    versions = {e.objection_id: (e.notice_version, e.notice_version_derived) for e in state.history}
    assert versions == {
        "before-any": (None, False),  # nothing had been sent yet
        "after-v1": (None, False),  # a withdrawal answers no notice
        "after-v2": ("v2", True),
        "named": ("v9", False),  # the person said which one: kept
    }


def test_a_notice_imported_late_updates_the_version_an_earlier_objection_answered() -> None:
    state = apply_objection(None, objection("o-1", 12), T)
    assert state.history[0].notice_version is None
    state = apply_notice(state, notice("n-late", 10, "v2"), T)
    assert (state.history[0].notice_version, state.history[0].notice_version_derived) == ("v2", True)
    state = apply_notice(state, notice("n-later-still", 11, "v3"), T)
    assert state.history[0].notice_version == "v3"


def test_the_status_document_shows_the_notices_sent() -> None:
    state = apply_notice(None, notice("n-1", 0, "v1", "FR", "in_app"), T)
    doc = status_document_of("u-1", state, T + D)
    assert doc["status"] == "none" and doc["objected"] is False and doc["history"] == []
    assert doc["notices"] == [{"notice_id": "n-1", "notice_version": "v1", "channel": "in_app", "sent_at": "2023-11-14T22:13:20Z", "country": "FR"}]


# ------------------------------------------------------------------ the changelog


def test_the_changelog_round_trips_notices_and_derived_versions() -> None:
    state = apply_notice(None, notice("n-1", 0, "v1"), T)
    state = apply_objection(state, objection("o-1", 1), T)
    assert decode_consent_state(encode_consent_state(state)) == state


def test_a_changelog_record_written_before_notices_existed_still_reads() -> None:
    old = {
        "user_id": "u-1",
        "history": [{"objection_id": "o-1", "kind": "object", "channel": "web", "received_at": "2023-11-14T22:13:20Z", "enforced_at": None, "purged_at": None, "rows_purged": None}],
        "intervals": [[T, None]],
        "pending": ["o-1"],
        "updated_at": "2023-11-14T22:13:20Z",
    }
    state = decode_consent_state(orjson.dumps(old))
    assert state.notices == () and state.pending_withdrawals == ()
    view = decode_enforcement_view(orjson.dumps(old))
    assert view == ((((T, None),), ("o-1",), (), NO_NOTICES))


def test_ingest_reads_the_first_notice_and_the_notice_countries() -> None:
    state = apply_notice(None, notice("n-2", 10, country="US"), T)
    state = apply_notice(state, notice("n-1", 3, country="FR"), T)
    view = decode_enforcement_view(encode_consent_state(state))
    assert view.notices == NoticeFacts(T + 3 * D, frozenset({"FR", "US"}))
    assert view.intervals == () and view.pending == ()


# ------------------------------------------------------------------ the grace period setting


@pytest.mark.parametrize(
    ("text", "us"),
    [("30d", 30 * D), ("45m", 45 * 60_000_000), ("90s", 90_000_000), ("12h", 12 * 3_600_000_000), ("P30D", 30 * D), ("PT5M", 300_000_000), ("P1DT12H", D + D // 2)],
)
def test_grace_periods_are_written_as_durations(text: str, us: int) -> None:
    assert parse_duration_us(text) == us


@pytest.mark.parametrize("text", ["", "30", "thirty days", "P1M", "P1Y", "PT", "-5s", "1.5d"])
def test_a_grace_period_that_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_us(text)

