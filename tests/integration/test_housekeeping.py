"""The sink's housekeeping (services/sink/housekeeping.py) on a real Delta table, with
intervals of a fraction of a second: small files are compacted, purged files vacuumed, on
their schedules, and neither undoes a purge nor touches a file being written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from deltalake import DeltaTable
from prometheus_client import REGISTRY

from services.sink.housekeeping import Housekeeping
from services.sink.settings import SinkSettings
from services.sink.store import TABLE_CONFIGURATION, DeltaTrainingStore
from tests.integration.test_store_concurrent_commits import commit_underneath
from tests.support.residue import residue
from tests.support.wait import eventually_async


def rows(user: str, n: int, start: int = 0) -> list[dict]:
    return [
        {"post_id": f"{user}-post-{i}", "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"private words of {user} number {i}",
         "lang": "fr", "country": "FR", "ingested_at": "2025-05-27T10:00:01Z"}
        for i in range(start, start + n)
    ]


def sleeper(stopping: asyncio.Event):  # type: ignore[no-untyped-def]
    """The sink's `_sleep`: waits `seconds`, or less once `stopping` is set."""

    async def sleep(seconds: float) -> None:
        try:
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    return sleep


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_compaction_and_vacuum_run_on_their_schedules_and_keep_purges_physical(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    store.append(rows("bob-bbb", 2) + rows("alice-aaa", 3))
    for n in range(1, 6):  # one-second flushes: one small file each
        store.append(rows("bob-bbb", 2, start=2 * n))
    store.purge(["alice-aaa"])  # rewrites her file: six small files
    in_flight = tmp_path / "training" / "part-00000-in-flight-c000.snappy.parquet"  # a running write, not committed yet
    in_flight.write_bytes(b"PAR1 not committed yet")
    settings = SinkSettings(training_store_uri=uri, compact_interval_s=0.3, vacuum_interval_s=0.5, data_dir=tmp_path / "var")
    compacted_before, removed_before = sample("consentry_sink_compaction_files_removed_total"), sample("consentry_sink_vacuum_files_removed_total")
    stopping = asyncio.Event()
    sleep = sleeper(stopping)

    housekeeping = asyncio.create_task(Housekeeping(settings, DeltaTrainingStore(uri), lambda: True, sleep, stopping).run())
    try:
        async def vacuumed_twice() -> bool:
            record = await asyncio.to_thread(store.vacuum_record)
            return record is not None and record.runs >= 2

        await eventually_async(vacuumed_twice, timeout=60, what="two scheduled vacuums")
    finally:
        stopping.set()
        await asyncio.wait_for(housekeeping, 30)

    assert store.stats().live_files == 1  # six small files compacted into one
    assert sample("consentry_sink_compaction_files_removed_total") - compacted_before >= 6
    assert sample("consentry_sink_vacuum_files_removed_total") - removed_before >= 6  # the purged and the compacted files
    assert sample("consentry_sink_last_compaction_timestamp") > 0 and sample("consentry_sink_last_vacuum_timestamp") > 0
    assert sample("consentry_sink_vacuum_interval_seconds") == 0.5
    assert sorted(store.read(["post_id"]).column("post_id").to_pylist()) == sorted(f"bob-bbb-post-{i}" for i in range(12))
    assert in_flight.exists()  # younger than the orphan grace: maybe a running write
    in_flight.unlink()
    assert residue(tmp_path / "training", {"alice-aaa"} | {f"alice-aaa-post-{i}" for i in range(3)}) == []
    # Compaction writes statistics only where every write does: no id of anyone in the log.
    assert residue(tmp_path / "training" / "_delta_log", {"bob-bbb", "bob-bbb-post-0", "alice-aaa"}) == []
    configuration = DeltaTable(uri).metadata().configuration
    assert {k: configuration.get(k) for k in TABLE_CONFIGURATION} == TABLE_CONFIGURATION  # the table's properties survive
    assert configuration["consentry.bucketCount"] == str(store.buckets)  # and so does its layout


def test_a_compaction_overtaken_by_a_purge_is_done_again_and_does_not_bring_the_rows_back(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    for n in range(3):
        store.append(rows("bob-bbb", 1, start=n) + rows("alice-aaa", 1, start=n))
    before = sample("consentry_sink_commit_conflicts_total", {"operation": "compact"})
    commit_underneath(store, lambda: DeltaTrainingStore(uri).purge(["alice-aaa"]))

    store.compact()

    assert sample("consentry_sink_commit_conflicts_total", {"operation": "compact"}) == before + 1
    assert sorted(DeltaTrainingStore(uri).read(["post_id"]).column("post_id").to_pylist()) == [f"bob-bbb-post-{i}" for i in range(3)]



class VacuumedWhileReading(DeltaTrainingStore):
    """A sink's store whose snapshot is overtaken, once, right after it is taken, by another
    replica's (or the housekeeping task's) compaction and vacuum: the files it lists are gone."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.overtaken = 0

    def _fresh(self):  # type: ignore[no-untyped-def]
        table = super()._fresh()
        if not self.overtaken:
            self.overtaken += 1
            other = DeltaTrainingStore(self.uri)
            other.compact()
            other.vacuum()  # removes the compacted small files at once (a purge's must go at once)
        return table


@pytest.mark.parametrize("operation", ["de-duplication", "purge"])
def test_a_flush_reading_while_a_vacuum_removes_compacted_files_reads_the_new_version(tmp_path: Path, operation: str) -> None:
    """Found by test_hostile_posts_full: the sink's de-duplication read died on `FileNotFoundError`
    for a small file that the housekeeping's compaction had replaced and its vacuum removed a
    moment later, and the sink stopped (its batch is replayed after a restart, but in a loop)."""
    uri = str(tmp_path / "training")
    setup = DeltaTrainingStore(uri)
    for n in range(4):  # one small file per flush
        setup.append(rows("bob-bbb", 1, start=n) + rows("alice-aaa", 1, start=n))
    store = VacuumedWhileReading(uri)

    if operation == "purge":
        assert sorted(store.purge(["alice-aaa"])["alice-aaa"]) == [f"alice-aaa-post-{i}" for i in range(4)]
        assert sorted(DeltaTrainingStore(uri).read(["post_id"]).column("post_id").to_pylist()) == [f"bob-bbb-post-{i}" for i in range(4)]
    else:
        assert store.stored_post_ids(rows("bob-bbb", 2, start=3)) == {"bob-bbb-post-3"}  # one stored, one new
    assert store.overtaken == 1


def test_a_compaction_overtaken_by_a_purge_leaves_no_copy_of_the_purged_rows_after_vacuum(tmp_path: Path) -> None:
    """Found by test_races_full_scaled[303] (make test-reliability): a purged user's text in an
    uncommitted compacted file after `consentry vacuum`, spared as a possible write in flight."""
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    for n in range(3):
        store.append(rows("bob-bbb", 1, start=n) + rows("alice-aaa", 1, start=n))
    commit_underneath(store, lambda: DeltaTrainingStore(uri).purge(["alice-aaa"]))
    # As the sink compacts: its own buckets, its flushes held (nothing else writes there meanwhile).
    store.compact(buckets=range(store.buckets), exclusive=True)  # the first attempt wrote alice's rows, then lost to the purge

    DeltaTrainingStore(uri).vacuum()

    assert residue(tmp_path / "training", {"alice-aaa"} | {f"alice-aaa-post-{i}" for i in range(3)}) == []


async def test_each_replica_compacts_only_its_own_buckets_and_only_the_owner_vacuums(tmp_path: Path) -> None:
    from consentry.partitioning import bucket_of

    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    for n in range(3):
        store.append(rows("bob-bbb", 1, start=n) + rows("alice-aaa", 1, start=n))
    bob, alice = bucket_of("bob-bbb", store.buckets), bucket_of("alice-aaa", store.buckets)
    assert bob != alice
    settings = SinkSettings(training_store_uri=uri, compact_interval_s=0.3, vacuum_interval_s=0.5, data_dir=tmp_path / "var")
    stopping = asyncio.Event()
    sleep = sleeper(stopping)

    def files_in(bucket: int) -> int:
        actions = DeltaTable(uri).get_add_actions(flatten=True)
        return sum(1 for b in actions.column("partition.bucket").to_pylist() if int(b) == bucket)

    housekeeping = asyncio.create_task(Housekeeping(settings, DeltaTrainingStore(uri), lambda: False, sleep, stopping,
                                                    compaction_scope=lambda: ([bob], True)).run())
    try:
        await eventually_async(lambda: asyncio.to_thread(lambda: files_in(bob) == 1), timeout=60, what="bob's bucket compacted")
    finally:
        stopping.set()
        await asyncio.wait_for(housekeeping, 30)
    assert files_in(alice) == 3  # another replica's bucket: left to it
    assert store.vacuum_record() is None  # not the owner of partition 0: no vacuum
