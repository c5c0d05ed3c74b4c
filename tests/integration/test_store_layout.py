"""The training store's bucket layout (issue 13): rows are partitioned by a bucket derived from
the user (a hash, never the id), so a purge, a de-duplication and a sink's commits touch only
the buckets of their users; a starting sink's clean-up spares files another sink is writing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from consentry.domain.purge import Plan
from consentry.partitioning import bucket_of
from services.sink.store import BUCKETS_PROPERTY, LayoutError, DeltaTrainingStore, migrate_to_buckets
from services.sink.writer import IdempotentWriter

BUCKETS = 16


def row(post_id: str, user: str, created: str = "2025-05-27T10:00:00Z") -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": created, "text": f"text of {post_id}", "lang": None,
            "country": "FR", "ingested_at": "2025-05-27T10:00:01Z"}


def users_in_distinct_buckets(n: int, buckets: int = BUCKETS) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        found.setdefault(bucket_of(f"user-{i}", buckets), f"user-{i}")
        i += 1
    return list(found.values())


def files(uri: str) -> set[str]:
    return set(DeltaTable(uri).file_uris())


def test_rows_are_partitioned_by_their_users_bucket_and_the_count_is_a_table_property(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=BUCKETS)
    alice, bob = users_in_distinct_buckets(2)
    store.append([row("p1", alice), row("p2", bob), row("p3", alice)])
    table = DeltaTable(uri)
    assert table.metadata().partition_columns == ["bucket"]
    assert table.metadata().configuration[BUCKETS_PROPERTY] == str(BUCKETS)
    by_post = {r["post_id"]: r["bucket"] for r in store.read(["post_id", "bucket"]).to_pylist()}
    assert by_post == {"p1": bucket_of(alice, BUCKETS), "p2": bucket_of(bob, BUCKETS), "p3": bucket_of(alice, BUCKETS)}
    assert {Path(f).parent.name for f in files(uri)} == {f"bucket={bucket_of(alice, BUCKETS)}", f"bucket={bucket_of(bob, BUCKETS)}"}
    # The count is the table's: a store opened with another default keeps it.
    assert DeltaTrainingStore(uri, buckets=64).buckets == BUCKETS


def test_a_purge_rewrites_only_files_of_its_users_buckets(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=BUCKETS)
    users = users_in_distinct_buckets(6)
    store.append([row(f"{u}-{i}", u) for u in users for i in range(3)])
    before = files(uri)
    removed = store.purge([users[0]])
    assert sorted(removed[users[0]]) == [f"{users[0]}-{i}" for i in range(3)]
    after = files(uri)
    untouched = {f for f in before if f"bucket={bucket_of(users[0], BUCKETS)}/" not in f}
    assert before - after == before - untouched, "the purge rewrote files of buckets its user does not live in"
    assert untouched <= after


def test_the_writer_holds_no_index_and_reads_only_the_buckets_it_writes(tmp_path: Path) -> None:
    """No set of every post_id (it grew with the table): duplicates are looked up in the
    buckets of the batch only. The files of another bucket are removed behind Delta's back:
    a writer that read them would fail."""
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=BUCKETS)
    alice, bob = users_in_distinct_buckets(2)
    IdempotentWriter(store).apply(Plan(appends=[row("a1", alice), row("b1", bob)]))
    for name in files(uri):
        if f"bucket={bucket_of(bob, BUCKETS)}/" in name:
            os.remove(name)
    writer = IdempotentWriter(DeltaTrainingStore(uri))  # a restarted sink
    assert not hasattr(writer, "index")
    applied = writer.apply(Plan(appends=[row("a1", alice), row("a2", alice)]))  # a1 re-delivered
    assert (applied.appended, applied.duplicates) == (1, 1)
    assert sorted(store.read(["post_id"], buckets=[bucket_of(alice, BUCKETS)]).column("post_id").to_pylist()) == ["a1", "a2"]


def test_a_duplicate_is_found_whatever_the_created_at_of_the_rest_of_the_batch(tmp_path: Path) -> None:
    """An old post released late (a deferred one) in a batch of new ones is recognised."""
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=BUCKETS)
    alice = users_in_distinct_buckets(1)[0]
    writer = IdempotentWriter(store)
    writer.apply(Plan(appends=[row("old", alice, "2025-01-01T00:00:00Z"), row("new", alice, "2025-05-27T10:00:00Z")]))
    applied = IdempotentWriter(store).apply(Plan(appends=[row("old", alice, "2025-01-01T00:00:00Z"), row("new", alice, "2025-05-27T10:00:00Z"),
                                                          row("newer", alice, "2025-05-28T10:00:00Z")]))
    assert (applied.appended, applied.duplicates) == (1, 2)


def test_a_post_delivered_again_with_another_created_at_is_still_a_duplicate(tmp_path: Path) -> None:
    """Exactly once by post_id (the contract's rule), whatever else a re-delivery changed: an
    upstream producer's retry with a fresh created_at is the same post. (The look-up narrowed
    to the batch's created_at ranges stored it twice: test_sink_crash_between_delta_commit_and_offset_commit
    found ['bob-1', 'bob-1', 'bob-2'].)"""
    store = DeltaTrainingStore(str(tmp_path / "training"), buckets=BUCKETS)
    bob = users_in_distinct_buckets(1)[0]
    IdempotentWriter(store).apply(Plan(appends=[row("bob-1", bob, "2025-05-27T10:00:00Z")]))
    applied = IdempotentWriter(store).apply(Plan(appends=[row("bob-1", bob, "2025-05-29T12:00:00Z"), row("bob-2", bob, "2025-05-29T12:00:01Z")]))
    assert (applied.appended, applied.duplicates) == (1, 1)
    assert sorted(store.read(["post_id"]).column("post_id").to_pylist()) == ["bob-1", "bob-2"]


def test_an_unpartitioned_table_is_refused_until_migrated(tmp_path: Path) -> None:
    """A table written before the bucket layout: the sink does not start on it (its purges
    would read every file), and says which command migrates it; the migration keeps every
    row and the recorded positions."""
    import pyarrow as pa
    from deltalake import CommitProperties, Transaction, write_deltalake

    from services.sink.store import TABLE_CONFIGURATION

    uri = str(tmp_path / "training")
    old = pa.schema([f for f in __import__("services.sink.store", fromlist=["SCHEMA"]).SCHEMA if f.name not in ("bucket", "cluster")])
    DeltaTable.create(uri, old, configuration=TABLE_CONFIGURATION)
    data = pa.table({"post_id": ["p1", "p2"], "user_id": ["alice", "bob"], "created_at": pa.array([1, 2], pa.timestamp("us", tz="UTC")),
                     "text": ["t1", "t2"], "lang": [None, None], "country": ["FR", "FR"],
                     "ingested_at": pa.array([3, 4], pa.timestamp("us", tz="UTC"))}, schema=old)
    write_deltalake(uri, data, mode="append", commit_properties=CommitProperties(app_transactions=[Transaction("consentry-sink:training.posts:0", 2)]))
    with pytest.raises(LayoutError, match="consentry migrate-store"):
        DeltaTrainingStore(uri)
    assert migrate_to_buckets(uri, buckets=BUCKETS) == 2
    store = DeltaTrainingStore(uri)
    assert store.buckets == BUCKETS
    assert sorted(store.read(["post_id", "bucket"]).to_pylist(), key=lambda r: r["post_id"]) == [
        {"post_id": "p1", "bucket": bucket_of("alice", BUCKETS)}, {"post_id": "p2", "bucket": bucket_of("bob", BUCKETS)}]
    assert store.applied_position("consentry-sink:training.posts:0") == 2
    assert store.purge(["alice"]) == {"alice": ["p1"]}


def test_a_starting_sinks_clean_up_spares_files_another_sink_has_not_committed_yet(tmp_path: Path) -> None:
    """Sink A has written a Parquet file and not committed it yet; sink B starts and removes
    a crashed writer's leftovers: only those older than ORPHAN_GRACE_HOURS (longer than any
    commit takes), so A's commit stays readable. An old leftover still goes."""
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=BUCKETS)
    alice = users_in_distinct_buckets(1)[0]
    store.append([row("a1", alice)])
    bucket_dir = Path(uri) / f"bucket={bucket_of(alice, BUCKETS)}"
    written = next(bucket_dir.glob("*.parquet"))
    in_flight = bucket_dir / "part-00000-sink-a-in-flight-c000.snappy.parquet"
    in_flight.write_bytes(written.read_bytes().replace(b"a1", b"a2"))  # same size: a2 instead of a1
    crashed = bucket_dir / "part-00000-crashed-long-ago-c000.snappy.parquet"
    crashed.write_bytes(written.read_bytes())
    old = time.time() - 2 * 3600
    os.utime(crashed, (old, old))

    assert DeltaTrainingStore(uri).remove_orphans() == 1  # what SinkWorker.start runs (sink B)

    assert in_flight.exists() and not crashed.exists()
    # Sink A commits the file it wrote.
    table = DeltaTable(uri)
    add = AddAction(f"bucket={bucket_of(alice, BUCKETS)}/{in_flight.name}", in_flight.stat().st_size, {"bucket": str(bucket_of(alice, BUCKETS))},
                    int(time.time() * 1000), True, None)
    table.create_write_transaction([add], mode="append", schema=table.schema(), partition_by=["bucket"])
    assert pq.read_table(in_flight).num_rows == 1
    assert sorted(DeltaTrainingStore(uri).read(["post_id"]).column("post_id").to_pylist()) == ["a1", "a2"]


def test_a_purge_is_not_overtaken_by_another_sinks_append_to_other_buckets(tmp_path: Path) -> None:
    """Two sinks own disjoint buckets: one's append lands between the other's snapshot and its
    purge's commit without a conflict (delta-rs checks the delete's predicate, `bucket IN
    (...)` first, against the files the append added), so no purge is done twice."""
    from prometheus_client import REGISTRY

    from tests.integration.test_store_concurrent_commits import commit_underneath

    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=BUCKETS)
    alice, bob, carol = users_in_distinct_buckets(3)
    store.append([row("a1", alice), row("b1", bob)])
    conflicts = lambda: REGISTRY.get_sample_value("consentry_sink_commit_conflicts_total", {"operation": "purge"}) or 0.0  # noqa: E731
    before = conflicts()
    commit_underneath(store, lambda: DeltaTrainingStore(uri).append([row("c1", carol)]))
    assert store.purge([alice]) == {alice: ["a1"]}
    assert conflicts() == before
    assert sorted(store.read(["post_id"]).column("post_id").to_pylist()) == ["b1", "c1"]
