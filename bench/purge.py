"""6. The training store at scale (issue 13): for each table size (default 5M and 50M rows),
build the table, start a sink on it and read its RSS once ready, then purge N users
(DeltaTrainingStore.purge, as the sink does for purge markers) and vacuum.

The table is written directly with deltalake (not through Kafka), in the bucket layout, each
user's posts together in one file of their bucket (as a compaction that sorts by user leaves
them), files of about FILE_ROWS rows per bucket: their count grows with the table, their size
does not. The purge's cost is what it reads and rewrites: the files of its users' buckets
(scanned for the users) and the files holding them (rewritten).

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
from consentry.partitioning import bucket_of
from services.sink.store import DEFAULT_BUCKETS, SCHEMA, DeltaTrainingStore

POSTS_PER_USER = 10
CHUNK_ROWS = 1_000_000  # one write: one file per bucket, ~CHUNK_ROWS / buckets rows each


def build(store: DeltaTrainingStore, rows: int, seed: int = 6) -> int:
    from deltalake import write_deltalake

    rng = random.Random(seed)
    words = ["le", "la", "les", "un", "une", "des", "et", "ou", "the", "a", "of", "to"]
    texts = pa.array([" ".join(rng.choices(words, k=12)) + f" #{i}" for i in range(5000)])
    base = 1_748_340_000_000_000
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        first_user = start // POSTS_PER_USER
        users = range(first_user, first_user + (n + POSTS_PER_USER - 1) // POSTS_PER_USER)
        ids = pa.array(range(start, start + n), pa.int64())
        nth_user = pc.divide(pa.array(range(n), pa.int64()), POSTS_PER_USER)  # integer division: a user's posts together
        user_ids = pc.add(nth_user, first_user)
        scrambled = pc.multiply(ids, 7919)
        spread = pc.subtract(scrambled, pc.multiply(pc.divide(scrambled, len(texts)), len(texts)))  # ids * 7919 mod len(texts)
        buckets = pa.array([bucket_of(f"user-{u}", store.buckets) for u in users], pa.int32()).take(nth_user)
        table = pa.table(
            {
                "post_id": pc.binary_join_element_wise("post-", ids.cast(pa.string()), ""),
                "user_id": pc.binary_join_element_wise("user-", user_ids.cast(pa.string()), ""),
                "created_at": pc.add(pc.multiply(ids, 1000), base).cast(pa.timestamp("us", tz="UTC")),
                "text": texts.take(spread),
                "lang": pa.array(["fr"] * n, pa.string()),
                "country": pa.array(["FR"] * n, pa.string()),
                "ingested_at": pc.add(pc.multiply(ids, 1000), base + 5_000_000).cast(pa.timestamp("us", tz="UTC")),
                "bucket": buckets,
            },
            schema=SCHEMA,
        )
        write_deltalake(store._fresh(), table, mode="append")
    return store.stats().live_files


def build_main(directory: Path, rows: int) -> dict:
    started = time.perf_counter()
    store = DeltaTrainingStore(str(directory / "training"), buckets=DEFAULT_BUCKETS)
    files = build(store, rows)
    return {"table_rows": rows, "files": files, "buckets": store.buckets, "build_seconds": time.perf_counter() - started}


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
