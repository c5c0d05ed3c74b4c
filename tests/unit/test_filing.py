"""What a person sees: the consent table's row with the events this gateway acknowledged and
the table has not applied yet (pure: consentry.domain.consent)."""

from consentry.domain.consent import apply_objection, apply_receipt, recorded_event, user_status, with_acknowledged
from consentry.domain.model import ENFORCED, PURGED, ObjectionEvent, Receipt, Status
from consentry.timeutil import parse_rfc3339

T0 = parse_rfc3339("2025-05-27T10:00:00Z")
OBJECTION = ObjectionEvent("o-1", "u-42", "object", T0, "email")


def recorded_and_purged():
    state = apply_objection(None, OBJECTION, T0)
    state = apply_receipt(state, Receipt(ENFORCED, "u-42", ("o-1",), T0 + 1_000_000), T0)
    return apply_receipt(state, Receipt(PURGED, "u-42", ("o-1",), T0 + 2_000_000, rows_purged=3), T0)


def test_an_event_known_to_the_consent_table_is_shown_as_recorded() -> None:
    state = recorded_and_purged()
    assert with_acknowledged("u-42", state, [OBJECTION], T0) is state
    assert user_status("u-42", state, T0).status == Status.PURGED


def test_a_withdrawal_not_yet_applied_shows_as_withdrawn() -> None:
    withdrawal = ObjectionEvent("w-1", "u-42", "withdraw", T0 + 5_000_000, "api")
    merged = with_acknowledged("u-42", recorded_and_purged(), [withdrawal], T0 + 6_000_000)
    status = user_status("u-42", merged, T0 + 6_000_000)
    assert status.status == Status.WITHDRAWN and status.objected is False
    assert [entry.objection_id for entry in status.history] == ["o-1", "w-1"]


def test_a_first_objection_not_yet_applied_shows_as_received() -> None:
    merged = with_acknowledged("u-7", None, [ObjectionEvent("o-9", "u-7", "object", T0, "app")], T0)
    status = user_status("u-7", merged, T0)
    assert (status.status, status.objected) == (Status.RECEIVED, True)


def test_another_users_receipts_are_never_merged() -> None:
    assert with_acknowledged("u-7", None, [OBJECTION], T0) is None


def test_an_idempotent_retry_finds_the_original_receipt_in_the_consent_state() -> None:
    state = recorded_and_purged()
    assert recorded_event(state, "o-1") == OBJECTION
    assert recorded_event(state, "o-2") is None
