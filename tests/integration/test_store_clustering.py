"""The training store's clustering (issue 13): within a bucket, rows are sorted by `cluster`, a
second number derived from the user's hash (never the id), and the files carry min/max
statistics on it; a compaction leaves each bucket's files holding disjoint cluster ranges. So
a purge reads and rewrites only the files its users live in, whatever the table's size: its
cost follows the purged users, not the table."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from services.sink.store import DeltaTrainingStore
from tests.support.residue import residue

FILE_BYTES = 64 << 10  # the table's file size (delta.targetFileSize): small, for many files in a small table
USERS = 2000
FLUSHES = 10


def row(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"words of {user} in {post_id}",
            "lang": "fr", "country": "FR", "ingested_at": "2025-05-27T10:00:01Z"}


def live_files(uri: str) -> dict[str, int]:
    """The table's live files and their row counts."""
    actions = DeltaTable(uri).get_add_actions(flatten=True)
    return dict(zip(actions.column("path").to_pylist(), actions.column("num_records").to_pylist(), strict=True))


def test_a_purge_of_one_user_rewrites_only_the_files_holding_that_user(tmp_path: Path) -> None:
    uri = str(tmp_path / "training")
    store = DeltaTrainingStore(uri, buckets=1)  # one bucket: what matters is the layout inside a bucket
    DeltaTable(uri).alter.set_table_properties({"delta.targetFileSize": str(FILE_BYTES)})
    users = [f"user-{i:05d}" for i in range(USERS)]  # no id inside another
    for flush in range(FLUSHES):  # the sink's flushes: every one holds users from all over the bucket
        store.append([row(f"{user}-{flush}", user) for user in users])
    store.compact()  # what the sink's housekeeping runs: the layout the table settles in
    before = live_files(uri)
    total = sum(before.values())
    assert total == USERS * FLUSHES
    victim = users[7]
    holding = {path for path in before if pc.any(pc.equal(pq.read_table(Path(uri) / path, columns=["user_id"]).column(0), victim)).as_py()}

    assert sorted(store.purge([victim])[victim]) == sorted(f"{victim}-{flush}" for flush in range(FLUSHES))

    after = live_files(uri)
    rewritten = set(before) - set(after)
    assert rewritten == holding, "the purge rewrote files that do not hold its user"
    rewritten_rows = sum(before[path] for path in rewritten)
    assert rewritten_rows <= total // 4, (
        f"the purge of one user rewrote {rewritten_rows} of {total} rows ({len(rewritten)} of {len(before)} files): "
        "the files holding the user hold most of the table")
    assert len(after) >= len(before) - len(rewritten)  # every other file untouched
    assert sum(after.values()) == total - FLUSHES
    store.vacuum()  # physically complete: neither the user nor any post id in the log
    assert residue(tmp_path / "training" / "_delta_log", {victim, users[8], f"{users[8]}-0"}) == []
    assert residue(tmp_path / "training", {victim, f"{victim}-0"}) == []


def test_a_bucket_layout_table_without_the_cluster_column_is_refused_until_migrated(tmp_path: Path) -> None:
    """A table of the release before: partitioned by bucket, no `cluster`. The sink does not
    start on it (its purges would read every file of their buckets) and names the command; the
    migration keeps the rows, their buckets, the bucket count and the positions, and sorts."""
    import pyarrow as pa
    import pytest
    from deltalake import CommitProperties, Transaction, write_deltalake

    from consentry.partitioning import bucket_of, cluster_of
    from services.sink.store import BUCKETS_PROPERTY, SCHEMA, TABLE_CONFIGURATION, LayoutError, migrate_to_buckets

    uri = str(tmp_path / "training")
    old = pa.schema([f for f in SCHEMA if f.name != "cluster"])
    DeltaTable.create(uri, old, partition_by=["bucket"],
                      configuration={**TABLE_CONFIGURATION, "delta.dataSkippingStatsColumns": "created_at,ingested_at", BUCKETS_PROPERTY: "8"}, raise_if_key_not_exists=False)
    users = ["alice", "bob", "carol"]
    data = pa.table({"post_id": [f"{u}-1" for u in users], "user_id": users, "created_at": pa.array([1, 2, 3], pa.timestamp("us", tz="UTC")),
                     "text": ["t1", "t2", "t3"], "lang": [None] * 3, "country": ["FR"] * 3,
                     "ingested_at": pa.array([4, 5, 6], pa.timestamp("us", tz="UTC")), "bucket": pa.array([bucket_of(u, 8) for u in users], pa.int32())},
                    schema=old)
    write_deltalake(uri, data, mode="append", commit_properties=CommitProperties(app_transactions=[Transaction("consentry-sink:training.posts:0", 7)]))
    with pytest.raises(LayoutError, match=r"no `cluster` column.*consentry migrate-store"):
        DeltaTrainingStore(uri)

    assert migrate_to_buckets(uri, buckets=64) == 3

    store = DeltaTrainingStore(uri)
    assert store.buckets == 8  # the table's own count, not the command's default
    assert sorted(store.read(["post_id", "bucket", "cluster"]).to_pylist(), key=lambda r: r["post_id"]) == [
        {"post_id": f"{u}-1", "bucket": bucket_of(u, 8), "cluster": cluster_of(u)} for u in users]
    assert store.applied_position("consentry-sink:training.posts:0") == 7
    assert DeltaTable(uri).metadata().configuration["delta.dataSkippingStatsColumns"] == "created_at,ingested_at,cluster"
    assert store.purge(["bob"]) == {"bob": ["bob-1"]}
