"""Which stored rows reconciliation deletes (services.sink.reconcile.offending), on the
in-memory store: rows of objecting users the purges should have removed, never an eligible one."""

from __future__ import annotations

from consentry.timeutil import format_rfc3339
from services.sink.reconcile import MARGIN_US, FAIL_CLOSED, ObjectedUsers, find_offending, offending
from services.sink.reconcile_record import PassFigures, ReconcileRecord, decode_record, encode_record, next_record
from services.sink.store import MemoryTrainingStore, rows_to_arrow

HOUR = 3_600_000_000
NOW = 1_800_000_000_000_000
COLUMNS = ["post_id", "user_id", "created_at", "ingested_at"]


def row(post_id: str, user: str, created: int, ingested: int) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(created), "text": "t", "lang": None,
            "country": None, "ingested_at": format_rfc3339(ingested)}


def found(rows: list[dict], intervals: dict, at: int = NOW) -> list[str]:
    table = rows_to_arrow(rows).select(COLUMNS)
    return sorted(offending(table, ObjectedUsers.of(at, intervals)).column("post_id").to_pylist())


def test_every_row_of_an_active_objector_stored_before_the_pass_goes() -> None:
    rows = [
        row("old", "alice", NOW - 100 * HOUR, NOW - 99 * HOUR),  # stored before she objected: the marker's job
        row("leak", "alice", NOW - 2 * HOUR, NOW - 2 * HOUR),  # stored while she objected: ingest's
        row("bob", "bob", NOW - 2 * HOUR, NOW - 2 * HOUR),
    ]
    assert found(rows, {"alice": ((NOW - 10 * HOUR, None),)}) == ["leak", "old"]


def test_a_row_stored_within_the_margin_of_the_pass_is_left_to_the_next() -> None:
    """Ingest's clock may be ahead of this one, and a withdrawal unseen by this pass may
    already be applied by ingest: a fresh row may be eligible."""
    rows = [row("fresh", "alice", NOW - HOUR, NOW - MARGIN_US + 1), row("older", "alice", NOW - HOUR, NOW - MARGIN_US - 1)]
    assert found(rows, {"alice": ((NOW - 10 * HOUR, None),)}) == ["older"]


def test_after_a_withdrawal_posts_created_while_objecting_go_later_ones_stay() -> None:
    start, end = NOW - 10 * HOUR, NOW - 5 * HOUR
    rows = [
        row("during", "carol", start + HOUR, end + HOUR),  # created during the objection, ingested after: never eligible
        row("before-stored-before", "carol", start - HOUR, start - HOUR),  # the purge should have removed it
        row("before-stored-after", "carol", start - HOUR, end + HOUR),  # created before, stored after the withdrawal: eligible
        row("after", "carol", end + HOUR, end + 2 * HOUR),  # eligible again
        row("at-the-end", "carol", end, end + 2 * HOUR),  # the interval is [start, end)
        row("just-after-withdrawal", "carol", end - HOUR, end - MARGIN_US + 1),  # within the margin: left alone
    ]
    assert found(rows, {"carol": ((start, end),)}) == ["before-stored-before", "during", "just-after-withdrawal"]


def test_several_intervals_each_count() -> None:
    first, second = (NOW - 20 * HOUR, NOW - 15 * HOUR), (NOW - 10 * HOUR, None)
    rows = [
        row("in-first", "dan", NOW - 17 * HOUR, NOW - 12 * HOUR + MARGIN_US),
        row("between", "dan", NOW - 12 * HOUR, NOW - 12 * HOUR),  # eligible then, but the active objection's purge removes it
        row("fresh", "dan", NOW - 12 * HOUR, NOW - MARGIN_US // 2),
    ]
    assert found(rows, {"dan": (first, second)}) == ["between", "in-first"]


def test_an_unreadable_consent_record_counts_as_an_objection_since_ever() -> None:
    rows = [row("p", "erin", 0, NOW - HOUR)]
    assert found(rows, {"erin": FAIL_CLOSED}) == ["p"]


def test_users_are_compared_exactly() -> None:
    rows = [row("p1", "Alice", NOW - 2 * HOUR, NOW - 2 * HOUR), row("p2", "alice ", NOW - 2 * HOUR, NOW - 2 * HOUR)]
    assert found(rows, {"alice": ((0, None),)}) == []


def test_a_scan_in_batches_finds_the_same_rows() -> None:
    store = MemoryTrainingStore()
    store.append([row(f"p{i}", f"u{i % 7}", NOW - 2 * HOUR, NOW - 2 * HOUR) for i in range(100)])
    objected = ObjectedUsers.of(NOW, {"u3": ((0, None),), "u5": ((0, None),), "nobody": ((0, None),)})
    hits, scanned = find_offending(store, objected, batch_rows=8)
    assert scanned == 100
    assert sorted(hits.column("post_id").to_pylist()) == sorted(f"p{i}" for i in range(100) if i % 7 in (3, 5))


def test_the_record_adds_each_pass() -> None:
    first = next_record(None, PassFigures(10, 100, 3, 1, 0.5), 1_000)
    second = next_record(first, PassFigures(11, 101, 0, 0, 0.25), 2_000)
    assert second == ReconcileRecord(runs=2, rows_purged_total=3, last_ended_at_us=2_000, last_seconds=0.25, last_users=11,
                                     last_rows_scanned=101, last_rows_purged=0)
    assert decode_record(encode_record(second)) == second
    assert decode_record(b"{not json") is None


def test_the_intervals_are_read_from_the_consent_services_own_records() -> None:
    from consentry.domain.consent import apply_objection
    from consentry.domain.model import ObjectionEvent
    from consentry.wire import decode_intervals, encode_consent_state

    state = apply_objection(None, ObjectionEvent("o1", "alice", "object", NOW - 10 * HOUR, "web"), NOW)
    state = apply_objection(state, ObjectionEvent("o2", "alice", "withdraw", NOW - 5 * HOUR, "web"), NOW)
    state = apply_objection(state, ObjectionEvent("o3", "alice", "object", NOW - HOUR, "web"), NOW)
    assert decode_intervals(encode_consent_state(state)) == state.intervals == ((NOW - 10 * HOUR, NOW - 5 * HOUR), (NOW - HOUR, None))
