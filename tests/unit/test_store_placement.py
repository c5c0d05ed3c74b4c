"""Where the training store looks for users' rows (services/sink/store.py): the predicate that
selects files by bucket and cluster names numbers only, and compaction sorts a bucket again
only when its files' cluster ranges overlap."""

from __future__ import annotations

import re

import pyarrow as pa

from consentry.partitioning import bucket_of, cluster_of, user_hash
from services.sink.store import files_for_placement, placement, placement_predicate, unclustered_buckets


def test_cluster_is_the_high_bits_of_the_hash_the_bucket_takes_the_low_ones_of() -> None:
    for user in ("alice", "bob", "u-42", "Zoë"):
        assert 0 <= cluster_of(user) < 1 << 16
        assert cluster_of(user) == user_hash(user) >> 15 and bucket_of(user, 64) == user_hash(user) % 64
    assert [cluster_of(u) for u in ("alice", "bob", "u-42")] == [user_hash(u) >> 15 for u in ("alice", "bob", "u-42")]


def test_the_placement_predicate_names_each_users_bucket_and_cluster_and_no_id() -> None:
    users = [f"user-{i}" for i in range(300)]
    predicate = placement_predicate(users, 4)
    assert not any(user in predicate for user in users)
    lists = re.findall(r"cluster IN \(([^)]*)\)", predicate)
    assert lists and all(len(values.split(",")) <= 16 for values in lists)  # DataFusion prunes only by short IN lists
    for user in users:
        assert re.search(rf"bucket = {bucket_of(user, 4)} AND \([^)]*\b{cluster_of(user)}\b", predicate) or f"bucket = {bucket_of(user, 4)}" in predicate
    # Many values in one bucket: the whole bucket, not a predicate longer than what it skips.
    assert placement_predicate([f"user-{i}" for i in range(2000)], 1) == "(bucket = 0)"


def actions(files: list[tuple[int, int, int | None, int | None]]) -> pa.Table:
    """(bucket, rows, min cluster, max cluster) per file; 10 bytes a row."""
    return pa.table({"partition.bucket": [f[0] for f in files], "num_records": [f[1] for f in files],
                     "size_bytes": [f[1] * 10 for f in files], "min.cluster": pa.array([f[2] for f in files], pa.int32()),
                     "max.cluster": pa.array([f[3] for f in files], pa.int32())})


def test_a_bucket_is_sorted_again_when_a_one_user_lookup_would_read_much_of_it() -> None:
    sorted_files = [(0, 1000, i * 4096, i * 4096 + 4095) for i in range(16)]  # disjoint ranges
    flushes = [(1, 100, 0, 65535)] * 30 + [(1, 1000, i * 4096, i * 4096 + 4095) for i in range(16)]  # 3,000 fresh rows span it all
    few = [(2, 100, 0, 65535)] * 3  # a small bucket: nothing to gain
    unknown = [(3, 1000, None, None)] * 4  # no statistics: read whatever the user
    assert unclustered_buckets(actions(sorted_files + flushes + few + unknown), file_bytes=10_000) == [1, 3]
    assert unclustered_buckets(actions([]), file_bytes=10_000) == []


def test_the_de_duplication_look_up_reads_the_files_the_placement_predicate_would_select() -> None:
    """files_for_placement: the files of the users' buckets whose cluster range holds one of them
    (or that have no statistics); the same selection as placement_predicate's, made from the
    log's metadata without delta-rs' per-file dataset construction (issue 16)."""
    users = [f"user-{i}" for i in range(40)]
    wanted = placement(users, 4)
    assert wanted == {b: sorted({cluster_of(u) for u in users if bucket_of(u, 4) == b}) for b in range(4) if any(bucket_of(u, 4) == b for u in users)}
    files = []  # (path, bucket, min, max)
    for bucket in range(5):  # bucket 4 holds none of them
        for i in range(16):
            files.append((f"bucket={bucket}/sorted-{i}", bucket, i * 4096, i * 4096 + 4095))
        files.append((f"bucket={bucket}/flush", bucket, 0, 65535))
        files.append((f"bucket={bucket}/no-stats", bucket, None, None))
    table = pa.table({"path": [f[0] for f in files], "partition.bucket": pa.array([str(f[1]) for f in files]),
                      "min.cluster": pa.array([f[2] for f in files], pa.int32()), "max.cluster": pa.array([f[3] for f in files], pa.int32())})
    chosen = files_for_placement(table, wanted)
    expected = [path for path, bucket, lo, hi in files
                if bucket in wanted and (lo is None or any(lo <= c <= hi for c in wanted[bucket]))]
    assert chosen == expected
    assert not any(p.startswith("bucket=4/") for p in chosen)
    assert {f"bucket={b}/flush" for b in wanted} <= set(chosen) and {f"bucket={b}/no-stats" for b in wanted} <= set(chosen)
    assert len(chosen) < len(files) - 18  # sorted files outside the users' clusters are skipped
    assert files_for_placement(table, {}) == [] and files_for_placement(table.slice(0, 0), wanted) == []
