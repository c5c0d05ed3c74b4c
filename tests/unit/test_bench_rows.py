"""bench's import-to-enforced and recovery rows: reading the consent changelog, the standby's
catch-up, the extrapolation to 1M and the rows (pure: records and results given)."""

from __future__ import annotations

from bench.failover import STANDBY_BUFFER, probes_per_partition, records_behind, standby_caught_up
from bench.import_enforced import Stamps, import_lines
from bench.report import import_enforced_row, recovery_row, replay_rate
from consentry.importer import ImportBatch, OBJECTIONS
from consentry.partitioning import home_partition

SEEDED = b'{"user_id":"u-1","history":[],"notices":[{"notice_id":"n-1"}]}'
APPLIED = b'{"user_id":"u-1","history":[{"objection_id":"o-1","kind":"object","enforced_at":null,"purged_at":null}]}'
ENFORCED = b'{"user_id":"u-1","history":[{"objection_id":"o-1","kind":"object","enforced_at":"2026-11-30T21:00:00Z","purged_at":null}]}'
PURGED = b'{"user_id":"u-1","history":[{"objection_id":"o-1","kind":"object","enforced_at":"2026-11-30T21:00:00Z","purged_at":"2026-11-30T21:00:01Z"}]}'


def test_each_step_is_stamped_by_the_first_row_that_shows_it() -> None:
    stamps = Stamps({b"u-1": "o-1", b"u-2": "o-2"})
    for value, at in ((SEEDED, 1_000), (APPLIED, 2_000), (APPLIED, 2_500), (ENFORCED, 3_000), (PURGED, 4_000), (PURGED, 9_000)):
        stamps.see(b"u-1", value, at)
    stamps.see(b"u-3", APPLIED, 5_000)  # not an imported user
    assert (stamps.applied, stamps.enforced, stamps.purged) == ({b"u-1": 2_000}, {b"u-1": 3_000}, {b"u-1": 4_000})
    assert not stamps.done, "u-2 has not been seen"
    assert stamps.seconds_after(0) == {"applied": None, "enforced": None, "purged": None}, "a step counts once every objection reached it"
    stamps.see(b"u-2", PURGED.replace(b"u-1", b"u-2").replace(b"o-1", b"o-2"), 6_000)
    assert stamps.done
    assert stamps.seconds_after(1_000) == {"applied": 5.0, "enforced": 5.0, "purged": 5.0}, "the last objection to reach each step"


def test_the_import_file_is_what_consentry_import_accepts() -> None:
    batch = ImportBatch(now_us=1_800_000_000_000_000, kind=OBJECTIONS)
    for line in import_lines(3, 1_700_000_000_000_000).splitlines():
        batch.feed(line)
    assert (batch.report.accepted, batch.report.rejected_count) == (3, 0), batch.report.rejected
    assert [(e.objection_id, e.user_id, e.channel) for e in batch.events] == [(f"imp-{i:08d}", f"user-{i:08d}", "email") for i in range(3)]


def test_the_standby_is_caught_up_by_the_changelog_records_it_has_not_applied() -> None:
    ends = {0: 100, 1: 50, 2: 0}
    assert records_behind({0: 100, 1: 50}, ends) == 0
    assert records_behind({0: 90, 1: 50}, ends) == 10
    assert records_behind({0: 100}, ends) == 50, "a partition not held is behind by all of it"
    big = {p: 10 * STANDBY_BUFFER for p in range(3)}
    assert standby_caught_up({0: big[0], 1: big[1], 2: big[2] - STANDBY_BUFFER + 1}, big), "what faust holds in memory is left"
    assert not standby_caught_up({0: big[0], 1: big[1], 2: big[2] - STANDBY_BUFFER}, big)
    assert not standby_caught_up({0: 100, 1: 50}, ends), "a table smaller than one standby batch: no copy is seen, none assumed"


def test_probes_cover_every_partition() -> None:
    probes = probes_per_partition(1_000)
    assert sorted({home_partition(u, 8) for u in probes}) == list(range(8)) and len(probes) == 16


def test_import_row_extrapolates_to_1m_linearly_and_judges_the_target() -> None:
    r = {"imports": 10_000, "import_seconds": 2.0, "applied_seconds": 8.0, "enforced_seconds": 20.0, "purged_seconds": 25.0,
         "events": 30_000, "load": [1.5, 2.5]}
    measurement, result, target, verdict = import_enforced_row(r)
    assert "10,000 historical objections" in measurement and "load average 1.5–2.5" in measurement
    assert "1,200 events/s" in result, "3 events per objection over the time to the last purge"
    assert "enforced in 33.3 min, purged in 41.7 min" in result, "20 s × 100 and 25 s × 100"
    assert (target, verdict) == ("1M enforced < 3 min (extrapolated)", "**missed**")
    assert import_enforced_row({**r, "enforced_seconds": 1.7})[3] == "met"


def test_recovery_row_replay_rate_is_the_time_beyond_the_standby_run() -> None:
    r = {"users": 1_000_000, "partitions": 8, "without_standby_seconds": 115.0, "with_standby_seconds": 15.0, "replayed_users": 500_000,
         "with": {"records_behind": 400}, "load": [3.0, 4.0]}
    assert replay_rate(r) == 5_000
    result = recovery_row(r)[1]
    assert "replay 5,000 users/s" in result and "200 s per 1M users" in result and "115 s without a standby, ~15 s with one" in result
    assert "400 records behind" in result
    assert replay_rate({**r, "without_standby_seconds": 14.0}) is None
    assert "not measurable" in recovery_row({**r, "without_standby_seconds": 14.0})[1]
