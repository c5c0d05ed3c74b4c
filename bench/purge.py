"""6. The training store at scale (issue 13): for each table size (default 5M and 50M rows),
build the table, start a sink on it and read its RSS once ready, then purge N users
(DeltaTrainingStore.purge, as the sink does for purge markers) and vacuum.

The table is written directly with deltalake (not through Kafka) in the layout the sink's
compaction leaves: partitioned by bucket, each bucket's rows sorted by cluster (a user's posts
together) in files of the table's size (FILE_BYTES, delta.targetFileSize) holding disjoint
cluster ranges. Their count grows with the table, their size does not. A purge reads and
rewrites the files whose cluster range holds one of its users: about one file per user, so
its cost follows the users, not the table.

    python -m bench.purge build DIR ROWS
    python -m bench.purge purge DIR ROWS USERS_TO_PURGE
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bench.common import emit
from services.sink.store import CLUSTER, DEFAULT_BUCKETS, SCHEMA, DeltaTrainingStore

POSTS_PER_USER = 10
CHUNK_USERS = 100_000  # one write: 1M rows, a bucket and a half of the sorted table
# The table's file size: 4,096 of these short rows a file (delta-rs cuts files at its 1,024-row
# batches). A purge of U users from N files rewrites about N(1 - e^(-U/N)) of them, at most U:
# 1,000 users rewrite ~683 of 1,221 files (2.8M rows) of 5M, ~960 of 12,207 (3.9M rows) of 50M,
# whatever the table's size beyond. Smaller files rewrite less, but the sink's memory follows
# the file count (its snapshot of the log): 2,048-row files made it 1.28x at 50M.
FILE_BYTES = 288 << 10
_M = pa.scalar(0x5BD1E995, pa.uint32())


def _u32(value: int) -> pa.Scalar:
    return pa.scalar(value, pa.uint32())


def murmur2_same_length(ids: pa.StringArray, length: int) -> pa.UInt32Array:
    """Kafka's murmur2 of `length`-byte ASCII ids, & 0x7fffffff, vectorised (aiokafka's, in pure
    Python, takes a minute for 5M users); the build checks it against aiokafka's."""
    n = len(ids)
    flat = pa.Array.from_buffers(pa.uint8(), n * length, [None, ids.buffers()[2]])
    base = pc.multiply(pa.array(range(n), pa.int64()), length)

    def byte(j: int) -> pa.Array:
        return flat.take(pc.add(base, j)).cast(pa.uint32())

    h = pa.nulls(n, pa.uint32()).fill_null(_u32(0x9747B28C ^ length))
    for i in range(length // 4):
        k = byte(4 * i)
        for b in (1, 2, 3):
            k = pc.bit_wise_or(k, pc.shift_left(byte(4 * i + b), _u32(8 * b)))
        k = pc.multiply(k, _M)  # uint32: wraps, as the hash wants
        k = pc.multiply(pc.bit_wise_xor(k, pc.shift_right(k, _u32(24))), _M)
        h = pc.bit_wise_xor(pc.multiply(h, _M), k)
    tail, extra = length & ~3, length % 4
    if extra >= 3:
        h = pc.bit_wise_xor(h, pc.shift_left(byte(tail + 2), _u32(16)))
    if extra >= 2:
        h = pc.bit_wise_xor(h, pc.shift_left(byte(tail + 1), _u32(8)))
    if extra >= 1:
        h = pc.multiply(pc.bit_wise_xor(h, byte(tail)), _M)
    h = pc.bit_wise_xor(h, pc.shift_right(h, _u32(13)))
    h = pc.multiply(h, _M)
    h = pc.bit_wise_xor(h, pc.shift_right(h, _u32(15)))
    return pc.bit_wise_and(h, _u32(0x7FFFFFFF))


def user_hashes(users: int) -> pa.Array:
    """murmur2 of "user-0" ... "user-{users-1}", in user order (grouped by id length)."""
    from consentry.partitioning import user_hash

    parts = []
    low = 0
    while low < users:
        high = min(users, 10 ** len(str(low)))  # same number of digits: same length
        ids = pc.binary_join_element_wise("user-", pa.array(range(low, high), pa.int64()).cast(pa.string()), "")
        hashes = murmur2_same_length(ids, len(ids[0].as_py()))
        sample = range(0, len(ids), max(1, len(ids) // 100))
        assert [hashes[i].as_py() for i in sample] == [user_hash(ids[i].as_py()) for i in sample], "vectorised murmur2 differs"
        parts.append(hashes)
        low = high
    return pa.concat_arrays(parts).cast(pa.int64())


def build(store: DeltaTrainingStore, rows: int, seed: int = 6) -> int:
    from deltalake import write_deltalake

    rng = random.Random(seed)
    words = ["le", "la", "les", "un", "une", "des", "et", "ou", "the", "a", "of", "to"]
    texts = pa.array([" ".join(rng.choices(words, k=12)) + f" #{i}" for i in range(5000)])
    base = 1_748_340_000_000_000
    users = (rows + POSTS_PER_USER - 1) // POSTS_PER_USER
    hashes = user_hashes(users)
    bucket = pc.subtract(hashes, pc.multiply(pc.divide(hashes, store.buckets), store.buckets))  # hash % buckets
    placed = pa.table({"user": pa.array(range(users), pa.int64()), "bucket": bucket, CLUSTER: pc.shift_right(hashes, 15)})
    order = placed.sort_by([("bucket", "ascending"), (CLUSTER, "ascending"), ("user", "ascending")])  # what compaction's sort leaves
    for start in range(0, users, CHUNK_USERS):
        chunk = order.slice(start, CHUNK_USERS)
        n_users = chunk.num_rows
        nth = pc.divide(pa.array(range(n_users * POSTS_PER_USER), pa.int64()), POSTS_PER_USER)  # a user's posts together
        user = chunk.column("user").combine_chunks().take(nth)
        ids = pc.add(pc.multiply(user, POSTS_PER_USER), pc.subtract(pa.array(range(n_users * POSTS_PER_USER), pa.int64()), pc.multiply(nth, POSTS_PER_USER)))
        keep = pc.less(ids, rows)  # the last user may have fewer posts
        ids, user, nth = ids.filter(keep), user.filter(keep), nth.filter(keep)
        scrambled = pc.multiply(ids, 7919)
        spread = pc.subtract(scrambled, pc.multiply(pc.divide(scrambled, len(texts)), len(texts)))  # ids * 7919 mod len(texts)
        n = len(ids)
        table = pa.table(
            {
                "post_id": pc.binary_join_element_wise("post-", ids.cast(pa.string()), ""),
                "user_id": pc.binary_join_element_wise("user-", user.cast(pa.string()), ""),
                "created_at": pc.add(pc.multiply(ids, 1000), base).cast(pa.timestamp("us", tz="UTC")),
                "text": texts.take(spread),
                "lang": pa.array(["fr"] * n, pa.string()),
                "country": pa.array(["FR"] * n, pa.string()),
                "ingested_at": pc.add(pc.multiply(ids, 1000), base + 5_000_000).cast(pa.timestamp("us", tz="UTC")),
                "bucket": chunk.column("bucket").combine_chunks().take(nth).cast(pa.int32()),
                CLUSTER: chunk.column(CLUSTER).combine_chunks().take(nth).cast(pa.int32()),
            },
            schema=SCHEMA,
        )
        write_deltalake(store._fresh(), table, mode="append")  # files of the table's size (delta.targetFileSize)
    return store.stats().live_files


def build_main(directory: Path, rows: int) -> dict:
    started = time.perf_counter()
    store = DeltaTrainingStore(str(directory / "training"), buckets=DEFAULT_BUCKETS, file_bytes=FILE_BYTES)
    files = build(store, rows)
    return {"table_rows": rows, "files": files, "buckets": store.buckets, "file_kib": FILE_BYTES >> 10, "build_seconds": time.perf_counter() - started}


def purge_main(directory: Path, rows: int, purge_users: int) -> dict:
    users = rows // POSTS_PER_USER
    store = DeltaTrainingStore(str(directory / "training"))
    files = store.stats().live_files
    victims = [f"user-{u}" for u in random.Random(1).sample(range(users), purge_users)]

    started = time.perf_counter()
    removed = store.purge(victims)
    purge_seconds = time.perf_counter() - started
    started = time.perf_counter()
    vacuum = store.vacuum()
    vacuum_seconds = time.perf_counter() - started

    deleted = sum(len(v) for v in removed.values())
    remaining = store.read(["bucket"]).num_rows
    if remaining != rows - deleted or deleted != purge_users * POSTS_PER_USER:
        raise AssertionError(f"{remaining} rows left, {deleted} deleted; expected {rows - purge_users * POSTS_PER_USER} and {purge_users * POSTS_PER_USER}")
    total = purge_seconds + vacuum_seconds
    return {
        "table_rows": rows, "files": files, "users": purge_users, "rows_deleted": deleted,
        "purge_seconds": purge_seconds, "vacuum_seconds": vacuum_seconds, "files_vacuumed": vacuum.files_removed,
        "total_seconds": total, "rows_per_second": rows / total,
    }


if __name__ == "__main__":
    if sys.argv[1] == "build":
        emit(build_main(Path(sys.argv[2]), int(sys.argv[3])))
    else:
        emit(purge_main(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    # Skip interpreter teardown: delta-rs/Arrow worker threads sometimes abort it
    # ("terminate called without an active exception") after the work is done.
    os._exit(0)


def sink_rss(bootstrap: str, work: Path, uri: str) -> dict:
    """A sink started on the table: its RSS once ready (it holds no index of the table)."""
    from bench.common import rss_mib
    from bench.system import Services

    with Services(bootstrap, f"store{os.getpid()}{int(time.time())}-", work / "sink", extra_env={"TRAINING_STORE_URI": uri}) as services:
        services.create_topics()
        ready = services.start("sink", wait=False) or services.wait_ready("sink", timeout=600)
        return {"sink_ready_seconds": ready, "sink_rss_mib": rss_mib(services.pid("sink"), children=True)}


def run(work: Path, sizes: list[int], users: int, bootstrap: str | None = None) -> dict:
    """Every size in one run (the ratio is measured on one machine state)."""
    import shutil

    from bench.common import run_child

    out: dict = {"sizes": []}
    for rows in sizes:
        directory = work / f"purge-{rows}"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            size = run_child(["-m", "bench.purge", "build", str(directory), str(rows)], log=work / "purge.log", timeout=3600)
            if bootstrap is not None:
                size |= sink_rss(bootstrap, work, str(directory / "training"))
            size |= run_child(["-m", "bench.purge", "purge", str(directory), str(rows), str(users)], log=work / "purge.log", timeout=1800)
            out["sizes"].append(size)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    first, last = out["sizes"][0], out["sizes"][-1]
    out |= {k: first[k] for k in ("table_rows", "files", "users", "rows_deleted", "purge_seconds", "vacuum_seconds", "total_seconds", "rows_per_second")}
    if len(out["sizes"]) > 1:
        out["ratio"] = last["total_seconds"] / first["total_seconds"]
    return out
