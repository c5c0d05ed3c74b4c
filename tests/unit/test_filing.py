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


async def test_a_repeated_key_whose_event_was_folded_out_of_the_row_is_a_conflict() -> None:
    """A row keeps its newest events in full (consentry.domain.consent, "Bounded rows"). A key
    reused after its event was folded must not be filed again: the consent table would take
    the same objection_id for a re-delivery and never apply it, after a 202."""
    import pytest

    from consentry.domain.consent import was_folded
    from consentry.domain.model import HISTORY_KEPT
    from services.gateway.filing import Superseded, file_event
    from services.gateway.receipts import ReceiptCache, objection_id_for

    first = ObjectionEvent(objection_id_for("u-42", "object:K"), "u-42", "object", T0, "web")
    state = apply_objection(None, first, T0)
    for n in range(HISTORY_KEPT + 1):
        state = apply_objection(state, ObjectionEvent(f"later-{n}", "u-42", "withdraw" if n % 2 == 0 else "object", T0 + (n + 1) * 1_000_000, "web"), T0)
    assert was_folded(state, first.objection_id) and recorded_event(state, first.objection_id) is None

    class Consent:
        async def state(self, user_id: str):  # type: ignore[no-untyped-def]
            return state

    class Publisher:
        published: list[ObjectionEvent] = []

        async def publish(self, event: ObjectionEvent) -> None:
            self.published.append(event)

    publisher = Publisher()
    with pytest.raises(Superseded):
        await file_event("object", "u-42", "web", None, None, "K", publisher, ReceiptCache(), Consent())  # type: ignore[arg-type]
    assert publisher.published == []
