"""The consent worker's gauges: how many users its table holds, and how long the oldest
objection has waited for its purge (the purge backlog age)."""

from __future__ import annotations

from consentry.domain.consent import apply_objection, apply_receipt
from consentry.domain.model import ENFORCED, PURGED, ObjectionEvent, Receipt
from consentry.wire import decode_consent_state, encode_consent_state
from services.consent.backlog import ConsentWatch, PurgeBacklog, unpurged_since

S = 1_000_000  # one second in µs
YEARS_AGO = 1_000 * S


def objection(oid: str, user: str, at: int, channel: str = "web", kind: str = "object") -> ObjectionEvent:
    return ObjectionEvent(oid, user, kind, at, channel)


def purged(user: str, *oids: str, at: int) -> Receipt:
    return Receipt(PURGED, user, oids, at, rows_purged=1)


def test_a_live_objection_waits_from_when_it_was_received() -> None:
    state = apply_objection(None, objection("o1", "bob", at=100 * S), now_us=101 * S)
    assert unpurged_since(state) == {"o1": 100 * S}


def test_an_imported_objection_waits_from_when_it_was_recorded_not_from_its_original_date() -> None:
    state = apply_objection(None, objection("old", "ann", at=YEARS_AGO, channel="import"), now_us=5_000 * S)
    assert unpurged_since(state) == {"old": 5_000 * S}


def test_purged_objections_and_withdrawals_do_not_wait() -> None:
    state = apply_objection(None, objection("o1", "bob", at=100 * S), now_us=100 * S)
    state = apply_objection(state, objection("w1", "bob", at=110 * S, kind="withdraw"), now_us=110 * S)
    assert unpurged_since(state) == {"o1": 100 * S}  # withdrawn, but its purge is still owed
    state = apply_receipt(state, purged("bob", "o1", at=120 * S), now_us=120 * S)
    assert unpurged_since(state) == {}


def test_backlog_age_is_the_oldest_unpurged_objection() -> None:
    backlog = PurgeBacklog()
    assert backlog.age_seconds(now_us=500 * S) == 0.0  # nothing waits
    bob = apply_objection(None, objection("o1", "bob", at=100 * S), now_us=100 * S)
    eve = apply_objection(None, objection("o2", "eve", at=130 * S), now_us=130 * S)
    backlog.update(bob)
    backlog.update(eve)
    assert len(backlog) == 2
    assert backlog.age_seconds(now_us=160 * S) == 60.0

    # bob's purge is confirmed: eve's is now the oldest
    backlog.update(apply_receipt(bob, purged("bob", "o1", at=150 * S), now_us=150 * S))
    assert len(backlog) == 1
    assert backlog.age_seconds(now_us=160 * S) == 30.0


def test_an_import_keeps_its_start_when_its_row_changes_later() -> None:
    backlog = PurgeBacklog()
    imported = apply_objection(None, objection("old", "ann", at=YEARS_AGO, channel="import"), now_us=1_000 * S)
    backlog.update(imported)
    enforced = apply_receipt(imported, Receipt(ENFORCED, "ann", ("old",), 1_050 * S), now_us=1_050 * S)
    backlog.update(enforced)  # the row's updated_at moved; the clock did not
    assert backlog.age_seconds(now_us=1_100 * S) == 100.0


def test_a_clock_ahead_of_ours_is_not_a_negative_age() -> None:
    backlog = PurgeBacklog()
    backlog.update(apply_objection(None, objection("o1", "bob", at=200 * S), now_us=200 * S))
    assert backlog.age_seconds(now_us=199 * S) == 0.0


def test_memory_stays_proportional_to_the_backlog() -> None:
    backlog = PurgeBacklog()
    for i in range(5_000):
        user = f"u{i}"
        state = apply_objection(None, objection(f"o{i}", user, at=i * S), now_us=i * S)
        backlog.update(state)
        backlog.update(apply_receipt(state, purged(user, f"o{i}", at=i * S + 1), now_us=i * S + 1))
    assert len(backlog) == 0
    assert backlog.oldest_us() is None
    assert len(backlog._heap) <= 1024 + 2  # stale heap entries were compacted away


def test_the_watch_counts_new_users_and_rebuilds_from_the_table() -> None:
    watch = ConsentWatch()
    bob = apply_objection(None, objection("o1", "bob", at=100 * S), now_us=100 * S)
    watch.on_write(None, bob)
    bob2 = apply_receipt(bob, purged("bob", "o1", at=110 * S), now_us=110 * S)
    watch.on_write(bob, bob2)  # an update of a known user is not a new user
    eve = apply_objection(None, objection("o2", "eve", at=120 * S), now_us=120 * S)
    watch.on_write(None, eve)
    assert watch.users == 2
    assert len(watch.backlog) == 1

    # After a rebalance the worker owns other rows: it recounts from what the table holds.
    rows = [(b"bob", encode_consent_state(bob2)), (b"eve", encode_consent_state(eve)), (b"zoe", encode_consent_state(apply_objection(None, objection("o3", "zoe", at=90 * S), now_us=90 * S)))]
    watch.rebuild(rows, decode_consent_state)
    assert watch.users == 3
    assert len(watch.backlog) == 2
    assert watch.backlog.oldest_us() == 90 * S


def test_rebuild_decodes_only_rows_with_an_unpurged_objection() -> None:
    decoded = []

    def decode(raw: bytes):  # type: ignore[no-untyped-def]
        decoded.append(raw)
        return decode_consent_state(raw)

    done = apply_receipt(apply_objection(None, objection("o1", "bob", at=S), now_us=S), purged("bob", "o1", at=2 * S), now_us=2 * S)
    waiting = apply_objection(None, objection("o2", "eve", at=S), now_us=S)
    ConsentWatch().rebuild([(b"bob", encode_consent_state(done)), (b"eve", encode_consent_state(waiting))], decode)
    assert decoded == [encode_consent_state(waiting)]
