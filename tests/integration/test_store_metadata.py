"""The training store's metadata behind the sink's gauges, on a real Delta table on disk:
its live size (from the add actions) and the vacuum record `consentry vacuum` leaves."""

from __future__ import annotations

from pathlib import Path

from services.sink.store import DeltaTrainingStore


def rows(user: str, n: int) -> list[dict]:
    return [
        {"post_id": f"{user}-{i}", "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"text {i}", "lang": "fr", "country": "FR", "ingested_at": "2025-05-27T10:00:01Z"}
        for i in range(n)
    ]


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("bucket=*/*.parquet"))  # the data files, in their bucket's directory


def test_live_size_is_the_sum_of_the_files_the_table_references(tmp_path: Path) -> None:
    store = DeltaTrainingStore(str(tmp_path / "training"))
    assert store.stats().live_bytes == 0
    store.append(rows("alice", 50))
    store.append(rows("bob", 50))
    stats = store.stats()
    files = data_files(tmp_path / "training")
    assert stats.live_files == len(files) == 2
    assert stats.live_bytes == sum(f.stat().st_size for f in files)
    assert stats.version == store.version()

    # A purge rewrites or drops files: the live size shrinks at once, the disk only after a vacuum.
    store.purge(["bob"])
    after_purge = store.stats()
    assert after_purge.live_bytes < stats.live_bytes
    assert len(data_files(tmp_path / "training")) == 2
    store.vacuum()
    assert sum(f.stat().st_size for f in data_files(tmp_path / "training")) == after_purge.live_bytes


def test_every_vacuum_run_is_recorded_beside_the_table(tmp_path: Path) -> None:
    store = DeltaTrainingStore(str(tmp_path / "training"))
    assert store.vacuum_record() is None
    store.append(rows("alice", 10))
    store.append(rows("bob", 10))
    store.purge(["bob"])

    first = store.vacuum()
    record = store.vacuum_record()
    assert record is not None
    assert (record.runs, record.last_files_removed, record.last_version) == (1, first.files_removed, first.version)
    assert first.files_removed >= 1

    store.vacuum()  # nothing left to remove: Delta writes no commit, the record still counts it
    again = store.vacuum_record()
    assert again is not None and (again.runs, again.last_files_removed) == (2, 0)
    assert again.last_ended_at_us >= record.last_ended_at_us

    # The record is no data: the table still reads alice's rows only, and a vacuum keeps it.
    assert sorted(store.read(["user_id"]).column("user_id").to_pylist()) == ["alice"] * 10
    assert (tmp_path / "training" / "_consentry" / "vacuum.json").exists()
    # A fresh process (the sink) reads the same record.
    assert DeltaTrainingStore(str(tmp_path / "training")).vacuum_record() == again
