"""How objections, withdrawals and receipts change a user's consent state."""

from __future__ import annotations

from consentry.domain.consent import (
    apply_objection,
    apply_receipt,
    derive_intervals,
    is_active,
    user_status,
    status_of,
)
from consentry.domain.model import ENFORCED, PURGED, ObjectionEvent, Receipt
from consentry.wire import decode_consent_state, encode_consent_state
from consentry.wire import status_to_dict


def status_document_of(user_id: str, state, now_us: int) -> dict:
    """The document `GET /v1/objections/me` shows."""
    return status_to_dict(user_status(user_id, state, now_us))


T = 1_700_000_000_000_000


def objection(oid: str, at: int, kind: str = "object", channel: str = "web") -> ObjectionEvent:
    return ObjectionEvent(oid, "u-1", kind, at, channel)


def run(*events: ObjectionEvent):  # type: ignore[no-untyped-def]
    state = None
    for event in events:
        state = apply_objection(state, event, now_us=T)
    return state


def test_an_objection_opens_an_interval_and_awaits_enforcement() -> None:
    state = run(objection("o1", T))
    assert state.intervals == ((T, None),)
    assert state.pending == ("o1",)
    assert status_of(state) == "received"
    assert is_active(state.intervals, T + 1)


def test_redelivery_of_the_same_id_changes_nothing() -> None:
    first = run(objection("o1", T))
    again = apply_objection(first, objection("o1", T + 50), now_us=T + 99)
    assert again is first


def test_withdrawal_closes_the_interval() -> None:
    state = run(objection("o1", T), objection("w1", T + 10, "withdraw"))
    assert state.intervals == ((T, T + 10),)
    assert status_of(state) == "withdrawn"
    assert not is_active(state.intervals, T + 11)
    assert state.pending == ("o1",)  # posts of the interval may already be stored: still purge


def test_a_withdrawal_awaits_ingest_acknowledgement() -> None:
    state = run(objection("o1", T), objection("w1", T + 10, "withdraw"))
    assert state.pending_withdrawals == ("w1",)
    acked = apply_receipt(state, Receipt(ENFORCED, "u-1", ("o1", "w1"), T + 20), now_us=T + 21)
    assert acked.pending == () and acked.pending_withdrawals == ()
    assert [e.enforced_at_us for e in acked.history] == [T + 20, T + 20]
    assert status_document_of("u-1", acked, T + 30)["history"][1]["enforced_at"] is not None


def test_imported_events_in_any_order_give_the_same_state() -> None:
    """Historical events carry their own time: however an import is ordered, the row is the same.
    (Live events take effect in arrival order instead: see the order tests below.)"""
    events = [
        objection("o1", T, channel="import"), objection("w1", T + 10, "withdraw", "import"),
        objection("o2", T + 20, channel="import"), objection("o0", T - 5, channel="import"),
    ]
    forward = run(*events)
    backward = run(*reversed(events))
    assert forward.history == backward.history
    assert forward.intervals == backward.intervals == ((T - 5, T + 10), (T + 20, None))


def test_withdrawal_without_objection_and_repeated_objections() -> None:
    assert derive_intervals(run(objection("w0", T, "withdraw")).history) == ()
    assert run(objection("o1", T), objection("o2", T + 5)).intervals == ((T, None),)


def test_receipts_stamp_enforced_then_purged_and_clear_pending() -> None:
    state = run(objection("o1", T))
    enforced = apply_receipt(state, Receipt(ENFORCED, "u-1", ("o1",), T + 100), now_us=T + 101)
    assert status_of(enforced) == "enforced" and enforced.pending == ()
    purged = apply_receipt(enforced, Receipt(PURGED, "u-1", ("o1",), T + 200, rows_purged=3, enforced_at_us=T + 100), now_us=T + 201)
    assert status_of(purged) == "purged"
    entry = purged.history[0]
    assert (entry.enforced_at_us, entry.purged_at_us, entry.rows_purged) == (T + 100, T + 200, 3)
    # the first stamp wins: a replayed receipt changes nothing
    assert apply_receipt(purged, Receipt(PURGED, "u-1", ("o1",), T + 900, rows_purged=0), now_us=T + 901) is purged


def test_a_purge_confirmed_before_the_enforcement_receipt_still_clears_pending() -> None:
    state = run(objection("o1", T))
    purged = apply_receipt(state, Receipt(PURGED, "u-1", ("o1",), T + 200, rows_purged=0, enforced_at_us=T + 50), now_us=T + 201)
    assert purged.pending == ()
    assert purged.history[0].enforced_at_us == T + 50


def test_receipt_for_unknown_user_or_ids_changes_nothing() -> None:
    assert apply_receipt(None, Receipt(ENFORCED, "u-1", ("o1",), T), now_us=T) is None
    state = run(objection("o1", T))
    assert apply_receipt(state, Receipt(ENFORCED, "u-1", ("other",), T), now_us=T) is state


def test_state_round_trips_through_the_changelog_encoding() -> None:
    state = run(objection("o1", T), objection("w1", T + 10, "withdraw"))
    state = apply_receipt(state, Receipt(PURGED, "u-1", ("o1",), T + 20, rows_purged=2), now_us=T + 21)
    assert decode_consent_state(encode_consent_state(state)) == state


def test_status_document_shows_each_step_reached() -> None:
    state = apply_receipt(run(objection("o1", T)), Receipt(ENFORCED, "u-1", ("o1",), T + 1_000_000), now_us=T)
    doc = status_document_of("u-1", state, now_us=T + 2_000_000)
    assert doc["objected"] is True and doc["status"] == "enforced"
    assert doc["history"][0]["enforced_at"] == "2023-11-14T22:13:21Z"
    assert doc["history"][0]["purged_at"] is None
    assert status_document_of("nobody", None, T) == {"user_id": "nobody", "objected": False, "status": "none", "history": [], "notices": [], "trained_on_by": 0}


# ------------------------------------------------------- order of a user's events (issue 12)


def test_a_withdrawal_then_an_objection_from_a_replica_whose_clock_is_late_ends_objected() -> None:
    """Two gateway replicas, clocks 10 s apart: DELETE on the fast one, then POST on the slow
    one. The partition order (acknowledgement order) decides, not the writers' clocks."""
    withdrawn = apply_objection(apply_objection(None, objection("o-1", T), T), objection("w-1", T + 10_000_000, "withdraw"), T)
    again = apply_objection(withdrawn, objection("o-2", T + 5_000_000), T + 11_000_000)
    assert status_of(again) == "received"
    assert is_active(again.intervals, T + 11_000_000)
    assert [e.objection_id for e in again.history] == ["o-1", "w-1", "o-2"]
    assert again.history[-1].received_at_us == T + 10_000_001  # never backwards for one user


def test_events_at_the_same_instant_keep_their_arrival_order() -> None:
    state = apply_objection(None, objection("o-b", T), T)
    state = apply_objection(state, objection("w-a", T, "withdraw"), T)
    assert [e.objection_id for e in state.history] == ["o-b", "w-a"] and status_of(state) == "withdrawn"


def test_imported_events_keep_their_historical_time() -> None:
    live = apply_objection(None, objection("o-1", T), T)
    imported = apply_objection(live, objection("i-1", T - 86_400_000_000, channel="import"), T)
    assert imported.history[0].objection_id == "i-1" and imported.history[0].received_at_us == T - 86_400_000_000
