"""After a purge and the next vacuum, nothing of the purged user is left under the table's
directory: not in Parquet files, not in `_delta_log` (commits, checkpoints, statistics,
delete predicates), and no older version of the table can be read back with their rows."""

from __future__ import annotations

from pathlib import Path

from services.sink.store import DeltaTrainingStore
from tests.support.residue import residue, time_travel_residue, vacuum


def rows(user: str, n: int, start: int = 0) -> list[dict]:
    return [
        {"post_id": f"{user}-post-{i}", "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"private words of {user} number {i}",
         "lang": "fr", "country": "FR", "ingested_at": "2025-05-27T10:00:01Z"}
        for i in range(start, start + n)
    ]


def needles(user: str, n: int) -> set[str]:
    return {user} | {f"{user}-post-{i}" for i in range(n)} | {f"private words of {user} number {i}" for i in range(n)}


def test_purged_users_leave_no_byte_after_vacuum(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    # Alice's rows share files with bob's; then more of both, a purge of alice and one of zoe
    # (the smallest and largest ids: they would be a file's min/max statistics).
    store.append(rows("alice-aaa", 3) + rows("bob-bbb", 3) + rows("zoe-zzz", 2), {"consentry-sink:training.posts:0": 3})
    store.append(rows("alice-aaa", 2, start=3) + rows("bob-bbb", 1, start=3))
    assert residue(tmp_path / "training", {"alice-aaa", "zoe-zzz"})  # before: they are there, the search finds them
    store.purge(["alice-aaa"], {"consentry-sink:training.posts:0": 7})
    store.purge(["zoe-zzz"])
    store.append(rows("bob-bbb", 1, start=4))

    vacuum(uri)

    left = residue(tmp_path / "training", needles("alice-aaa", 5) | needles("zoe-zzz", 2))
    assert left == []
    assert time_travel_residue(uri, {"alice-aaa", "zoe-zzz"}) == []
    reopened = DeltaTrainingStore(uri)
    assert sorted(reopened.read(["post_id"]).column("post_id").to_pylist()) == [f"bob-bbb-post-{i}" for i in range(5)]
    assert reopened.applied_position("consentry-sink:training.posts:0") == 7  # positions survive the checkpoint


def test_a_purge_that_is_the_last_commit_is_gone_after_vacuum_too(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    store.append(rows("carol-ccc", 2) + rows("dan-ddd", 1))
    store.purge(["carol-ccc"])
    vacuum(uri)
    vacuum(uri)  # a second vacuum with nothing to remove changes nothing
    assert residue(tmp_path / "training", needles("carol-ccc", 2)) == []
    assert time_travel_residue(uri, {"carol-ccc"}) == []


def test_vacuum_spares_a_file_being_written_and_the_sink_removes_its_leftovers(tmp_path: Path) -> None:
    """`consentry vacuum` runs on a live system: a Parquet file the sink has written but not
    yet committed must survive it (else the commit would point at nothing), and so must it a
    starting sink's clean-up (another sink may be writing it). Once older than
    ORPHAN_GRACE_HOURS, a file a crashed sink left behind is removed when a sink starts."""
    import os
    import time

    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    store.append(rows("erin-eee", 1))
    written = next((tmp_path / "training").rglob("*.parquet"))
    in_flight = written.parent / "part-00000-in-flight-c000.snappy.parquet"
    in_flight.write_bytes(written.read_bytes())
    vacuum(uri)
    assert in_flight.exists()
    assert DeltaTrainingStore(uri).remove_orphans() == 0
    assert in_flight.exists()
    old = time.time() - 2 * 3600  # the writer crashed two hours ago
    os.utime(in_flight, (old, old))
    assert DeltaTrainingStore(uri).remove_orphans() == 1
    assert not in_flight.exists()
    assert DeltaTrainingStore(uri).read(["post_id"]).num_rows == 1


def test_a_purge_followed_by_an_automatic_checkpoint_is_vacuumed_too(tmp_path: Path) -> None:
    """delta-rs writes a checkpoint every 100 commits by itself and drops the log before it.
    The checkpoint keeps the files a delete removed (tombstones) only for
    `delta.deletedFileRetentionDuration`: at 0, the purged file was unknown to the next vacuum
    and stayed on disk, unreferenced, until an hour-old orphan sweep. Found by the race runs
    with reconciliation on (a run with more than 100 commits)."""
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri)
    store.append(rows("fay-fff", 2) + rows("bob-bbb", 2))
    store.purge(["fay-fff"])
    for position in range(1, 111):  # the sink's commits go on: an automatic checkpoint at version 100
        store.record_positions({"consentry-sink:training.posts:0": position})

    vacuum(uri)

    assert residue(tmp_path / "training", needles("fay-fff", 2)) == []
    assert time_travel_residue(uri, {"fay-fff"}) == []


def test_a_table_created_with_the_older_properties_gets_the_current_ones(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from services.sink.store import BUCKETS_PROPERTY, PARTITION_BY, SCHEMA, TABLE_CONFIGURATION

    uri = str(tmp_path / "training")
    created = {**TABLE_CONFIGURATION, "delta.deletedFileRetentionDuration": "interval 0 seconds", BUCKETS_PROPERTY: "64"}
    DeltaTable.create(uri, SCHEMA, partition_by=PARTITION_BY, configuration=created, raise_if_key_not_exists=False)
    DeltaTrainingStore(uri)
    assert DeltaTable(uri).metadata().configuration == {**TABLE_CONFIGURATION, BUCKETS_PROPERTY: "64"}
