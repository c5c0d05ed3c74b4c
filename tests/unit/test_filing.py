"""What a person sees: consent state merged with receipts this gateway just gave out."""

from consentry.events import ObjectionEvent
from consentry.timeutil import parse_rfc3339
from services.gateway.filing import find_recorded, merge_late

T0 = parse_rfc3339("2025-05-27T10:00:00Z")

RECORDED = {
    "user_id": "u-42",
    "objected": True,
    "status": "purged",
    "history": [
        {"objection_id": "o-1", "kind": "object", "channel": "email", "received_at": "2025-05-27T10:00:00Z",
         "enforced_at": "2025-05-27T10:00:01Z", "purged_at": "2025-05-27T10:00:02Z", "rows_purged": 3},
    ],
}


def test_an_event_known_to_the_consent_table_is_shown_as_recorded() -> None:
    assert merge_late(RECORDED, [ObjectionEvent("o-1", "u-42", "object", T0, "email")]) is RECORDED


def test_a_withdrawal_not_yet_applied_shows_as_withdrawn() -> None:
    withdrawal = ObjectionEvent("w-1", "u-42", "withdraw", T0 + 5_000_000, "api")
    merged = merge_late(RECORDED, [withdrawal])
    assert merged["status"] == "withdrawn" and merged["objected"] is False
    assert [item["objection_id"] for item in merged["history"]] == ["o-1", "w-1"]


def test_a_first_objection_not_yet_applied_shows_as_received() -> None:
    empty = {"user_id": "u-7", "objected": False, "status": "none", "history": []}
    merged = merge_late(empty, [ObjectionEvent("o-9", "u-7", "object", T0, "app")])
    assert (merged["status"], merged["objected"]) == ("received", True)


def test_an_idempotent_retry_finds_the_original_receipt_in_the_consent_state() -> None:
    event = find_recorded(RECORDED, "o-1")
    assert event == ObjectionEvent("o-1", "u-42", "object", T0, "email")
    assert find_recorded(RECORDED, "o-2") is None
