"""A user's row stays bounded (issue 12), whatever one person does, and its decisions stay
those of the whole history, erring closed only where consentry.domain.consent ("Bounded
rows") says. The reference is the unbounded history: every event in time order, derived with
`derive_intervals` and no fold."""

from __future__ import annotations

import bisect
import random
from dataclasses import replace

from consentry.domain.consent import (
    apply_objection,
    apply_receipt,
    derive_intervals,
    id_digest,
    is_active,
    status_of,
    was_folded,
)
from consentry.domain.model import (
    ENFORCED,
    FOLDED_AWAITING_KEPT,
    FOLDED_IDS_KEPT,
    HISTORY_KEPT,
    MAX_ROW_BYTES,
    OBJECT,
    PURGED,
    REASONS_KEPT,
    WITHDRAW,
    ConsentState,
    HistoryEntry,
    ObjectionEvent,
    Receipt,
)
from consentry.wire import decode_consent_state, encode_consent_state
from services.consent.backlog import UNPURGED_MARK, unpurged_since

S = 1_000_000
T0 = 1_700_000_000 * S
USER = "u-" + "\U0001f600" * 254  # 256 code points, 4 bytes each in UTF-8: the longest id there is


def worst_id(n: int) -> str:
    return f"{n:08d}" + "\U0001f600" * 248  # 256 code points, ~1 KB


def worst_event(n: int, kind: str) -> ObjectionEvent:
    """An event as large as the validator lets through: ids of 256 four-byte characters, a
    2,000-character reason and a 256-character notice version of control characters (which
    JSON escapes as six bytes each)."""
    return ObjectionEvent(worst_id(n), USER, kind, T0 + n * S, "web", "\x01" * 2000, "\x01" * 256)


def typical_event(n: int, kind: str) -> ObjectionEvent:
    return ObjectionEvent(f"{n:08d}-7f1f-4c1e-9a55-5c3f0e3e9d11", "u-42", kind, T0 + n * S, "web", "x" * 2000)


class Reference:
    """The whole history, unbounded: what the decisions must equal (or err closed against)."""

    def __init__(self) -> None:
        self.entries: dict[str, HistoryEntry] = {}

    def apply(self, event: ObjectionEvent, received_at_us: int) -> None:
        self.entries.setdefault(event.objection_id, HistoryEntry(event.objection_id, event.kind, received_at_us, event.channel))

    def stamp(self, receipt: Receipt) -> None:
        for oid in receipt.objection_ids:
            entry = self.entries[oid]
            if receipt.kind == ENFORCED and entry.enforced_at_us is None:
                self.entries[oid] = replace(entry, enforced_at_us=receipt.at_us)
            elif receipt.kind == PURGED and entry.kind == OBJECT:
                self.entries[oid] = replace(entry, purged_at_us=receipt.at_us, enforced_at_us=entry.enforced_at_us or receipt.at_us)

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        return tuple(sorted(self.entries.values(), key=lambda e: (e.received_at_us, e.objection_id)))

    def pending(self) -> set[str]:
        return {e.objection_id for e in self.entries.values() if e.kind == OBJECT and e.enforced_at_us is None}


def enforce_and_purge(state: ConsentState, reference: Reference, at_us: int) -> ConsentState:
    """What ingest and the sink do: a marker for the pending objections the row lists, an
    `enforced` receipt for them and the pending withdrawals, then a `purged` receipt."""
    named = state.pending + state.pending_withdrawals
    if not named:
        return state
    enforced = Receipt(ENFORCED, state.user_id, named, at_us)
    state = apply_receipt(state, enforced, at_us)
    reference.stamp(enforced)
    if enforced.objection_ids and any(reference.entries[o].kind == OBJECT for o in enforced.objection_ids):
        objections = tuple(o for o in named if reference.entries[o].kind == OBJECT)
        purged = Receipt(PURGED, state.user_id, objections, at_us + 1, 0, at_us)
        state = apply_receipt(state, purged, at_us + 1)
        reference.stamp(purged)
    return state


class Intervals:
    """Sorted, disjoint intervals, asked whether an instant is in one (a binary search)."""

    def __init__(self, intervals: tuple) -> None:
        self.intervals = intervals
        self.starts = [s for s, _ in intervals]

    def active_at(self, t: int) -> bool:
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and (self.intervals[i][1] is None or t < self.intervals[i][1])


def assert_decisions(state: ConsentState, reference: Reference, now_us: int) -> None:
    history = reference.history
    exact, bounded = derive_intervals(history), state.intervals
    edges = {t for interval in exact + bounded for t in interval if t is not None} | {now_us}
    probes = sorted(edges | {t + 1 for t in edges} | {t - 1 for t in edges})
    merged_until = state.folded.intervals[0][1] if state.folded is not None and state.folded.merged else None
    whole, row = Intervals(exact), Intervals(bounded)
    for t in probes:
        in_exact, in_bounded = whole.active_at(t), row.active_at(t)
        assert in_bounded or not in_exact, f"objected at {t} in the whole history, not in the row: a leak"
        if merged_until is None or t >= merged_until:
            assert in_bounded == in_exact, f"at {t}: the row decides otherwise than the whole history"
    assert status_of(state) == status_of(ConsentState(state.user_id, history))
    assert set(state.pending) <= reference.pending()
    assert bool(state.pending) == bool(reference.pending()), "a purge marker owed is forgotten"


def drive(events: int, make, receipts_every: int | None, seed: int = 7) -> tuple[ConsentState, Reference, int]:
    """Alternate objections and withdrawals; ingest and the sink confirm every few events."""
    rng = random.Random(seed)
    state: ConsentState | None = None
    reference = Reference()
    largest = 0
    for n in range(events):
        event = make(n, OBJECT if n % 2 == 0 else WITHDRAW)
        now = event.received_at_us
        state = apply_objection(state, event, now)
        reference.apply(event, state.history[-1].received_at_us)
        if receipts_every is not None and rng.randrange(receipts_every) == 0:
            state = enforce_and_purge(state, reference, now + S // 2)
        if n % 97 == 0 or n > events - 5:
            largest = max(largest, len(encode_consent_state(state)))
    assert state is not None
    return state, reference, largest


def test_a_row_stays_under_its_bound_after_10000_alternating_events_of_the_largest_size() -> None:
    state, reference, largest = drive(10_000, worst_event, receipts_every=3)

    assert largest <= MAX_ROW_BYTES, f"a row reached {largest} bytes"
    assert len(state.history) == HISTORY_KEPT and state.folded is not None and state.folded.events == 10_000 - HISTORY_KEPT
    assert sum(e.reason is not None for e in state.history) == REASONS_KEPT
    assert state.history[-1].reason == "\x01" * 2000  # the newest keep theirs
    assert_decisions(state, reference, T0 + 10_000 * S)
    assert decode_consent_state(encode_consent_state(state)) == state


def test_a_typical_row_of_a_person_objecting_thousands_of_times_is_small() -> None:
    state, reference, largest = drive(3_000, typical_event, receipts_every=2)

    assert largest <= 96 * 1024, largest  # ids of 36 characters, reasons of 2,000 ASCII characters
    assert_decisions(state, reference, T0 + 3_000 * S)


def test_with_ingest_down_the_row_stays_bounded_and_still_owes_its_purge_marker() -> None:
    state, reference, _ = drive(3_000, worst_event, receipts_every=None)  # no receipt ever comes

    assert len(encode_consent_state(state)) <= MAX_ROW_BYTES
    assert state.folded is not None and len(state.folded.awaiting) == FOLDED_AWAITING_KEPT
    assert state.pending  # ingest keeps writing purge markers until one is confirmed
    assert_decisions(state, reference, T0 + 3_000 * S)
    assert UNPURGED_MARK in encode_consent_state(state)
    oldest = min(unpurged_since(state).values())
    assert oldest == T0  # the backlog gauge keeps the oldest purge still owed

    state = enforce_and_purge(state, reference, T0 + 3_001 * S)  # ingest and the sink come back
    assert state.pending == () and unpurged_since(state) == {}
    assert UNPURGED_MARK not in encode_consent_state(state)


def test_redelivered_ids_change_nothing_as_long_as_they_are_remembered() -> None:
    state, _, _ = drive(1_500, typical_event, receipts_every=2)
    remembered = range(1_500 - HISTORY_KEPT - FOLDED_IDS_KEPT, 1_500)

    for n in (remembered[0], remembered[len(remembered) // 2], remembered[-1]):
        for kind in (OBJECT, WITHDRAW):
            assert apply_objection(state, typical_event(n, kind), T0 + 2_000 * S) is state
    assert was_folded(state, typical_event(remembered[0], OBJECT).objection_id)
    assert not was_folded(state, typical_event(remembered[-1], OBJECT).objection_id)  # kept in full
    assert len(state.folded.ids) == FOLDED_IDS_KEPT and id_digest("x") != id_digest("y")


def test_a_replay_of_forgotten_events_never_ends_an_objection() -> None:
    """Lost consumer offsets replay `objections` from the start: the forgotten ids come back
    in order. A withdrawal from the folded past closes nothing; an objection errs closed."""
    state, reference, _ = drive(1_500, typical_event, receipts_every=2)
    objected = apply_objection(state, typical_event(1_500, OBJECT), T0 + 1_500 * S)  # currently objected
    withdrawn = apply_objection(objected, typical_event(1_501, WITHDRAW), T0 + 1_501 * S)
    now = T0 + 2_000 * S

    for start in (objected, withdrawn):
        replayed = start
        for n in range(0, 1_500 - HISTORY_KEPT - FOLDED_IDS_KEPT):
            replayed = apply_objection(replayed, typical_event(n, OBJECT if n % 2 == 0 else WITHDRAW), now)
        assert is_active(replayed.intervals, now) or not is_active(start.intervals, now)
        assert len(encode_consent_state(replayed)) <= 96 * 1024


def test_an_import_into_the_folded_past_errs_closed() -> None:
    state, reference, _ = drive(2_000, typical_event, receipts_every=2)
    # An old objection and an old withdrawal, imported with their historical times: the first
    # in a withdrawn stretch of the folded past, the second in an objected one.
    gap = T0 + 101 * S + S // 2  # between withdrawal 101 and objection 102
    inside = T0 + 200 * S + S // 2  # between objection 200 and withdrawal 201
    old_objection = ObjectionEvent("imported-o", "u-42", OBJECT, gap, "import")
    old_withdrawal = ObjectionEvent("imported-w", "u-42", WITHDRAW, inside, "import")

    state = apply_objection(state, old_objection, T0 + 3_000 * S)
    reference.apply(old_objection, gap)
    assert is_active(state.intervals, gap) and "imported-o" in state.pending  # its purge is owed
    state = apply_objection(state, old_withdrawal, T0 + 3_000 * S)
    reference.apply(old_withdrawal, inside)
    assert is_active(state.intervals, inside + 1)  # an old withdrawal does not re-open old posts
    assert_decisions(state, reference, T0 + 3_000 * S)


def test_a_late_live_withdrawal_behind_the_folded_past_errs_closed_and_a_late_objection_is_applied() -> None:
    state, _, _ = drive(1_000, typical_event, receipts_every=2)  # ends withdrawn (event 999)
    behind = T0 + 10 * S  # a clock far behind, or a replayed event whose id was forgotten
    objection = ObjectionEvent("late-o", "u-42", OBJECT, behind, "web")
    withdrawal = ObjectionEvent("late-w", "u-42", WITHDRAW, behind, "web")
    now = T0 + 1_001 * S

    objected = apply_objection(state, objection, now)
    assert is_active(objected.intervals, now) and status_of(objected) == "received"  # applied as the latest
    still = apply_objection(objected, withdrawal, now)
    assert is_active(still.intervals, now)  # not moved to the end: it cannot end the objection
