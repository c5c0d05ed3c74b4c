"""Which stored rows reconciliation deletes: rows of objecting users their purges should have
removed, never an eligible one, never one a purge still on its way will remove
(consentry.domain.purge.reconcile_rules, services.sink.reconcile.offending)."""

from __future__ import annotations

from consentry.domain.consent import apply_objection, apply_receipt
from consentry.domain.model import ENFORCED, PURGED, Interval, ObjectionEvent, Receipt
from consentry.domain.purge import ObjectionFacts, reconcile_rules
from consentry.timeutil import format_rfc3339
from consentry.wire import encode_consent_state
from services.sink.reconcile import ObjectedUsers, decode_purge_facts, find_offending, offending
from services.sink.reconcile_record import PassFigures, ReconcileRecord, decode_record, encode_record, next_record
from services.sink.store import MemoryTrainingStore, rows_to_arrow

MINUTE = 60_000_000
HOUR = 60 * MINUTE
NOW = 1_800_000_000_000_000
GRACE, MARGIN = HOUR, 5 * MINUTE
COLUMNS = ["post_id", "user_id", "created_at", "ingested_at"]


def row(post_id: str, user: str, created: int, ingested: int) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(created), "text": "t", "lang": None,
            "country": None, "ingested_at": format_rfc3339(ingested)}


def objection(received: int, enforced: int | None = None, purged: bool = False, imported: bool = False) -> ObjectionFacts:
    return ObjectionFacts(received, imported, enforced, purged)


def horizon(intervals: tuple[Interval, ...], *objections: ObjectionFacts) -> int | None:
    return reconcile_rules(intervals, objections, NOW, GRACE, MARGIN)[0]


def found(rows: list[dict], users: dict[str, tuple[tuple[Interval, ...], tuple[ObjectionFacts, ...]]]) -> list[str]:
    table = rows_to_arrow(rows).select(COLUMNS)
    rules = {u: reconcile_rules(intervals, objs, NOW, GRACE, MARGIN) for u, (intervals, objs) in users.items()}
    objected = ObjectedUsers.of(NOW, {u: (closed, horizon) for u, (horizon, closed) in rules.items()})
    return sorted(offending(table, objected).column("post_id").to_pylist())


# ------------------------------------------------------------------ when a purge is due


def test_a_purge_confirmed_or_overdue_is_due_one_on_its_way_is_not() -> None:
    active = ((NOW - 10 * HOUR, None),)
    assert horizon(active, objection(NOW - 10 * HOUR, NOW - 10 * HOUR, purged=True)) == NOW - MARGIN
    assert horizon(active, objection(NOW - 10 * HOUR, NOW - 2 * HOUR)) == NOW - MARGIN  # marker written 2 h ago, never confirmed: lost
    assert horizon(active, objection(NOW - 10 * HOUR, NOW - 10 * MINUTE)) is None  # the marker is on its way
    assert horizon(((NOW - 2 * MINUTE, None),), objection(NOW - 2 * MINUTE)) is None  # just received


def test_a_live_objection_never_enforced_is_due_after_the_grace_an_imported_one_is_not() -> None:
    active = ((NOW - 10 * HOUR, None),)
    assert horizon(active, objection(NOW - 10 * HOUR)) == NOW - MARGIN
    assert horizon(active, objection(NOW - 10 * HOUR, imported=True)) is None  # its time is history, not when it came


def test_a_withdrawn_objection_reaches_its_end_or_its_marker() -> None:
    start, end = NOW - 10 * HOUR, NOW - 5 * HOUR
    assert horizon(((start, end),), objection(start, start + MINUTE, purged=True)) == end - MARGIN
    # Withdrawn before ingest enforced it: the marker, written later, deletes up to itself.
    assert horizon(((start, end),), objection(start, end + HOUR, purged=True)) == end + HOUR - MARGIN
    # An old objection and withdrawal imported today: its marker (today) deletes everything before it.
    assert horizon(((NOW - 900 * 24 * HOUR, NOW - 800 * 24 * HOUR),), objection(NOW - 900 * 24 * HOUR, NOW - 3 * HOUR, purged=True, imported=True)) == NOW - 3 * HOUR - MARGIN


def test_the_latest_due_objection_sets_the_horizon() -> None:
    intervals = ((NOW - 20 * HOUR, NOW - 15 * HOUR), (NOW - 10 * HOUR, None))
    first = objection(NOW - 20 * HOUR, NOW - 20 * HOUR, purged=True)
    second = objection(NOW - 10 * HOUR, NOW - 9 * MINUTE)  # on its way
    assert horizon(intervals, first, second) == NOW - 15 * HOUR - MARGIN
    assert horizon(intervals, first, objection(NOW - 10 * HOUR, NOW - 10 * HOUR, purged=True)) == NOW - MARGIN


# ------------------------------------------------------------------ which rows go


def test_every_row_of_an_objector_whose_purge_is_due_stored_before_the_pass_goes() -> None:
    rows = [
        row("old", "alice", NOW - 100 * HOUR, NOW - 99 * HOUR),  # stored before she objected: the marker's job
        row("leak", "alice", NOW - 2 * HOUR, NOW - 2 * HOUR),  # stored while she objected: ingest's
        row("fresh", "alice", NOW - HOUR, NOW - MARGIN + 1),  # within the margin: the next pass decides
        row("bob", "bob", NOW - 2 * HOUR, NOW - 2 * HOUR),
    ]
    assert found(rows, {"alice": (((NOW - 10 * HOUR, None),), (objection(NOW - 10 * HOUR, NOW - 10 * HOUR, purged=True),))}) == ["leak", "old"]


def test_nothing_goes_while_the_purge_is_on_its_way() -> None:
    rows = [row("old", "alice", NOW - 100 * HOUR, NOW - 99 * HOUR)]
    assert found(rows, {"alice": (((NOW - 20 * MINUTE, None),), (objection(NOW - 20 * MINUTE, NOW - 19 * MINUTE),))}) == []


def test_after_a_withdrawal_posts_created_while_objecting_go_later_ones_stay() -> None:
    start, end = NOW - 10 * HOUR, NOW - 5 * HOUR
    rows = [
        row("during", "carol", start + HOUR, end + HOUR),  # created during the objection, stored after: never eligible
        row("before-stored-before", "carol", start - HOUR, start - HOUR),  # the purge should have removed it
        row("before-stored-after", "carol", start - HOUR, end + HOUR),  # created before, stored after the withdrawal: eligible
        row("after", "carol", end + HOUR, end + 2 * HOUR),  # eligible again
        row("at-the-end", "carol", end, end + 2 * HOUR),  # the interval is [start, end)
        row("just-after-withdrawal", "carol", end - HOUR, end - MARGIN + 1),  # created inside: goes by created_at
        row("stored-at-withdrawal", "carol", start - HOUR, end - MARGIN + 1),  # within the margin: stays
    ]
    facts = (((start, end),), (objection(start, start + MINUTE, purged=True),))
    assert found(rows, {"carol": facts}) == ["before-stored-before", "during", "just-after-withdrawal"]


def test_an_old_objection_imported_after_the_posts_were_stored_is_its_markers_to_purge_first() -> None:
    """Found by the race runs with reconciliation on: a post stored (eligible then), then an
    old objection-and-withdrawal pair imported that covers its created_at. Until the import's
    purge is due, the marker on its way removes the post: not a leak."""
    start, end = NOW - 900 * HOUR, NOW - 800 * HOUR
    rows = [row("during", "dan", start + HOUR, NOW - 10 * MINUTE)]
    on_its_way = objection(start, NOW - MINUTE, imported=True)
    assert found(rows, {"dan": (((start, end),), (on_its_way,))}) == []
    assert found(rows, {"dan": (((start, end),), (objection(start, imported=True),))}) == []  # not even enforced
    assert found(rows, {"dan": (((start, end),), (objection(start, NOW - 2 * MINUTE, purged=True, imported=True),))}) == ["during"]


def test_users_are_compared_exactly() -> None:
    rows = [row("p1", "Alice", NOW - 2 * HOUR, NOW - 2 * HOUR), row("p2", "alice ", NOW - 2 * HOUR, NOW - 2 * HOUR)]
    assert found(rows, {"alice": (((0, None),), (objection(0, 1, purged=True),))}) == []


def test_a_scan_in_batches_finds_the_same_rows() -> None:
    store = MemoryTrainingStore()
    store.append([row(f"p{i}", f"u{i % 7}", NOW - 2 * HOUR, NOW - 2 * HOUR) for i in range(100)])
    objected = ObjectedUsers.of(NOW, {"u3": (((0, None),), NOW - MARGIN), "u5": (((0, None),), NOW - MARGIN), "nobody": (((0, None),), NOW)})
    hits, scanned = find_offending(store, objected, batch_rows=8)
    assert scanned == 100
    assert sorted(hits.column("post_id").to_pylist()) == sorted(f"p{i}" for i in range(100) if i % 7 in (3, 5))


# ------------------------------------------------------------------ the consent state as written


def test_the_facts_are_read_from_the_consent_services_own_records() -> None:
    at = NOW - 10 * HOUR
    state = apply_objection(None, ObjectionEvent("o1", "alice", "object", at, "web"), at)
    state = apply_receipt(state, Receipt(ENFORCED, "alice", ("o1",), at + 1_500_000), at + 1_500_000)
    state = apply_receipt(state, Receipt(PURGED, "alice", ("o1",), at + 3_000_000, 2, at + 1_500_000), at + 3_000_000)
    state = apply_objection(state, ObjectionEvent("o2", "alice", "withdraw", NOW - 5 * HOUR, "web"), NOW)
    state = apply_objection(state, ObjectionEvent("o3", "alice", "object", NOW - 900 * HOUR, "import"), NOW)
    intervals, objections = decode_purge_facts(encode_consent_state(state))
    assert intervals == state.intervals
    assert sorted(objections, key=lambda o: o.received_at_us) == [
        ObjectionFacts(NOW - 900 * HOUR, True, None, False),
        ObjectionFacts(at, False, at + 1_500_000, True),
    ]


def test_the_record_adds_each_pass() -> None:
    first = next_record(None, PassFigures(10, 100, 3, 1, 0.5), 1_000)
    second = next_record(first, PassFigures(11, 101, 0, 0, 0.25), 2_000)
    assert second == ReconcileRecord(runs=2, rows_purged_total=3, last_ended_at_us=2_000, last_seconds=0.25, last_users=11,
                                     last_rows_scanned=101, last_rows_purged=0)
    assert decode_record(encode_record(second)) == second
    assert decode_record(b"{not json") is None
