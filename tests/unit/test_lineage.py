"""Training-run lineage without I/O: which runs read a version that held a user's rows
(consentry.domain.lineage), the receipt and lineage records on the wire, and the consent row's
count of runs."""

from __future__ import annotations

from consentry.domain.consent import apply_objection, apply_receipt, user_status
from consentry.domain.lineage import RunRead, runs_that_read
from consentry.domain.model import OBJECT, PURGED, TRAINED_ON_IDS_KEPT, Channel, Invalid, ObjectionEvent, Receipt
from consentry.wire import decode_consent_state, encode_consent_state, encode_receipt, encode_run_read, parse_receipt, parse_run_read, status_to_dict

S = 1_000_000
T0 = 1_780_000_000 * S
MARGIN = 60 * S


def read(run_id: str, version: int, committed_s: float) -> RunRead:
    return RunRead(run_id, version, T0 + int(committed_s * S), T0 + int(committed_s * S) + S, 10, "/t")


def test_a_run_that_read_a_version_holding_the_rows_is_named() -> None:
    # The user's first row was ingested at T0+100 s and committed a little later; the purge is version 9.
    reads = [read("before-rows", 2, 0), read("with-rows", 5, 200), read("just-before-purge", 8, 300), read("after-purge", 9, 400)]
    assert runs_that_read(reads, purge_version=9, first_ingested_us=T0 + 100 * S, margin_us=MARGIN) == ("just-before-purge", "with-rows")


def test_a_run_that_read_within_the_clock_margin_before_the_rows_is_counted_the_safe_side() -> None:
    reads = [read("in-margin", 3, 100 - 30), read("out-of-margin", 2, 100 - 90)]
    assert runs_that_read(reads, 9, T0 + 100 * S, MARGIN) == ("in-margin",)


def test_a_purge_that_removed_nothing_names_no_run_and_a_run_is_named_once() -> None:
    reads = [read("r", 5, 200), read("r", 6, 250)]
    assert runs_that_read(reads, 9, None, MARGIN) == ()
    assert runs_that_read(reads, 9, T0, MARGIN) == ("r",)


def test_receipt_and_lineage_records_round_trip() -> None:
    receipt = Receipt(PURGED, "u-1", ("o-1",), T0, 3, T0 - S, ("run-a", "run-b"))
    assert parse_receipt(encode_receipt(receipt)) == receipt
    none_read = Receipt(PURGED, "u-1", ("o-1",), T0, 3, T0 - S, ())
    assert b"trained_on_runs" not in encode_receipt(none_read)  # absent when no run read the rows
    assert parse_receipt(encode_receipt(none_read)).trained_on_runs is None
    assert type(parse_receipt(b'{"type": "purged", "user_id": "u", "objection_ids": ["o"], "at": "2025-05-27T10:00:00Z", "trained_on_runs": [1]}')) is Invalid
    run = read("run-a", 7, 10)
    assert parse_run_read(encode_run_read(run)) == run
    assert type(parse_run_read(b'{"run_id": "r", "version": "7"}')) is Invalid


def _purged_row(user: str, runs_per_purge: list[tuple[str, ...]]):  # type: ignore[no-untyped-def]
    state = None
    for n, runs in enumerate(runs_per_purge):
        event = ObjectionEvent(f"o-{n}", user, OBJECT, T0 + n * S, Channel.WEB)
        state = apply_objection(state, event, T0 + n * S)
        state = apply_receipt(state, Receipt(PURGED, user, (f"o-{n}",), T0 + n * S + 1, 1, None, runs), T0 + n * S + 2)
    return state


def test_the_consent_row_counts_each_run_once_and_the_person_sees_the_count() -> None:
    state = _purged_row("u-1", [("run-a", "run-b"), ("run-b", "run-c")])  # run-b over-counted by the second purge
    assert state.trained_on_by == 3
    again = apply_receipt(state, Receipt(PURGED, "u-1", ("o-1",), T0 + 9 * S, 1, None, ("run-d",)), T0 + 10 * S)
    assert again.trained_on_by == 3  # a re-delivered receipt (first stamp wins) counts nothing
    assert decode_consent_state(encode_consent_state(state)) == state
    assert status_to_dict(user_status("u-1", state, T0 + 20 * S))["trained_on_by"] == 3
    assert status_to_dict(user_status("u-2", None, T0))["trained_on_by"] == 0


def test_the_row_stays_bounded_however_many_runs_read_the_posts() -> None:
    state = _purged_row("u-1", [tuple(f"run-{p}-{n}" for n in range(400)) for p in range(3)])
    assert state.trained_on_by == 1200
    assert len(state.trained_on_ids) == TRAINED_ON_IDS_KEPT
