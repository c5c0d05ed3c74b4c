"""The same behaviour from both training stores: the Delta table on disk and its in-memory twin."""

from __future__ import annotations

from pathlib import Path

import pytest

from consentry.domain.purge import Plan, Purge
from services.sink.store import DeltaTrainingStore, MemoryTrainingStore, TrainingStore
from services.sink.writer import IdempotentWriter


@pytest.fixture(params=["memory", "delta"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TrainingStore:
    if request.param == "memory":
        return MemoryTrainingStore()
    return DeltaTrainingStore(str(tmp_path / "training"))


def row(post_id: str, user: str) -> dict:
    return {
        "post_id": post_id, "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"text {post_id}",
        "lang": None, "country": "FR", "ingested_at": "2025-05-27T10:00:01.5Z",
    }


def ids(store: TrainingStore) -> list[str]:
    return sorted(store.read(["post_id"]).column("post_id").to_pylist())


def test_append_then_read_back_with_the_contract_columns(store: TrainingStore) -> None:
    store.append([row("p1", "alice"), row("p2", "bob")])
    table = store.read()
    # The contract's columns, then the bucket and cluster derived from the user (the partition
    # column, and the one files are sorted by).
    assert table.column_names == ["post_id", "user_id", "created_at", "text", "lang", "country", "ingested_at", "bucket", "cluster"]
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    first = sorted(table.to_pylist(), key=lambda r: r["post_id"])[0]
    assert first["created_at"].isoformat() == "2025-05-27T10:00:00+00:00"
    assert first["ingested_at"].isoformat() == "2025-05-27T10:00:01.500000+00:00"
    assert store.stored_post_ids([row("p1", "alice"), row("p3", "alice"), row("p2", "bob")]) == {"p1", "p2"}


def test_purge_removes_every_row_of_the_users_and_reports_them(store: TrainingStore) -> None:
    store.append([row("p1", "alice"), row("p2", "bob"), row("p3", "alice"), row("p4", "o'brien")])
    removed = store.purge(["alice", "o'brien", "nobody"])
    assert {u: sorted(p) for u, p in removed.items()} == {"alice": ["p1", "p3"], "o'brien": ["p4"]}
    assert ids(store) == ["p2"]


def test_purging_users_with_nothing_stored_makes_no_commit(store: TrainingStore) -> None:
    store.append([row("p1", "alice")])
    version = store.version()
    assert store.purge(["nobody"]) == {}
    assert store.version() == version


def test_the_writer_stores_each_post_id_once_even_across_restarts(store: TrainingStore) -> None:
    writer = IdempotentWriter(store)
    writer.apply(Plan(appends=[row("p1", "alice"), row("p2", "alice")]))
    applied = IdempotentWriter(store).apply(Plan(appends=[row("p2", "alice"), row("p3", "alice")]))  # a restart re-reads
    assert (applied.appended, applied.duplicates) == (1, 1)
    assert ids(store) == ["p1", "p2", "p3"]


def test_replaying_a_batch_with_a_purge_converges(store: TrainingStore) -> None:
    """A crash after the Delta commit but before the offset commit replays the batch."""
    IdempotentWriter(store).apply(Plan(appends=[row("a1", "alice"), row("b1", "bob")]))
    batch = Plan(purges={"alice": Purge("alice", ("o1",), 0)}, appends=[row("a2", "alice"), row("b2", "bob")])
    first = IdempotentWriter(store).apply(batch)
    assert first.purged_rows == {"alice": 1}
    after_first = ids(store)
    IdempotentWriter(store).apply(batch)
    assert ids(store) == after_first == ["a2", "b1", "b2"]


def test_a_store_written_only_by_commits_has_no_orphans_to_remove(store: TrainingStore) -> None:
    """What the sink asks every store at start (the Delta table's leftovers of a crashed
    write are tests/integration/test_purge_leaves_nothing.py's and test_store_layout.py's)."""
    store.append([row("p1", "alice")])
    store.append([row("p2", "bob")])
    assert store.remove_orphans() == 0
    assert ids(store) == ["p1", "p2"]
    assert store.uri
