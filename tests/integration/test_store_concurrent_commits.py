"""Two writers on one Delta table: the sink and a reconciliation pass (or a second sink
replica). delta-rs commits optimistically: a commit whose snapshot another commit changed
underneath fails (`CommitFailedError`: "a concurrent transaction deleted data this operation
read"). The store re-reads the table and does its operation again; nothing is lost, nothing
applied twice, and the positions it records are the ones of its own batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deltalake import DeltaTable
from prometheus_client import REGISTRY

from services.sink.store import DeltaTrainingStore

STREAM = "consentry-sink:training.posts:0"


def rows(user: str, n: int, start: int = 0) -> list[dict]:
    return [
        {"post_id": f"{user}-{i}", "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"words of {user} {i}",
         "lang": None, "country": None, "ingested_at": "2025-05-27T10:00:01Z"}
        for i in range(start, start + n)
    ]


def ids(uri: str) -> list[str]:
    return sorted(DeltaTable(uri).to_pyarrow_dataset().to_table(columns=["post_id"]).column("post_id").to_pylist())


def conflicts(operation: str) -> float:
    return REGISTRY.get_sample_value("consentry_sink_commit_conflicts_total", {"operation": operation}) or 0.0


def commit_underneath(store: DeltaTrainingStore, concurrent: Callable[[], None]) -> None:
    """The next snapshot `store` takes is overtaken by `concurrent`'s commit before it commits."""
    original = store._fresh
    calls = {"n": 0}

    def fresh():  # type: ignore[no-untyped-def]
        table = original()
        calls["n"] += 1
        if calls["n"] == 1:
            concurrent()
        return table

    store._fresh = fresh  # type: ignore[method-assign]


def other_writer_deletes(uri: str, predicate: str) -> Callable[[], None]:
    return lambda: DeltaTable(uri).delete(predicate)


def test_an_append_overtaken_by_a_delete_is_committed_again(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    sink = DeltaTrainingStore(uri)
    sink.append(rows("bob", 2) + rows("leaker", 2), {STREAM: 4})
    before = conflicts("append")
    commit_underneath(sink, other_writer_deletes(uri, "post_id IN ('leaker-0', 'leaker-1')"))

    sink.append(rows("bob", 2, start=2), {STREAM: 6})  # raised CommitFailedError: the sink died

    assert ids(uri) == ["bob-0", "bob-1", "bob-2", "bob-3"]
    assert DeltaTrainingStore(uri).applied_position(STREAM) == 6
    assert conflicts("append") == before + 1


def test_a_purge_overtaken_by_a_delete_is_done_again_on_the_new_snapshot(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    sink = DeltaTrainingStore(uri)
    sink.append(rows("alice", 3) + rows("leaker", 2) + rows("bob", 1), {STREAM: 6})
    commit_underneath(sink, other_writer_deletes(uri, "post_id IN ('leaker-0', 'alice-0')"))

    removed = sink.purge(["alice"], {STREAM: 7})

    assert sorted(removed["alice"]) == ["alice-1", "alice-2"]  # what this purge's commit removed
    assert ids(uri) == ["bob-0", "leaker-1"]
    assert DeltaTrainingStore(uri).applied_position(STREAM) == 7


def test_a_positions_commit_overtaken_by_a_delete_is_committed_again(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    sink = DeltaTrainingStore(uri)
    sink.append(rows("bob", 1) + rows("leaker", 1), {STREAM: 2})
    commit_underneath(sink, other_writer_deletes(uri, "post_id = 'leaker-0'"))

    sink.record_positions({STREAM: 3})

    assert DeltaTrainingStore(uri).applied_position(STREAM) == 3
    assert ids(uri) == ["bob-0"]
