"""6. Purge at scale: delete N users from an M-row training table (DeltaTrainingStore.purge,
as the sink does for purge markers), then vacuum. The table is written the way the sink
writes it (appends of ~100,000 rows, each user's posts spread over every file).

    python -m bench.purge DIR ROWS USERS_TO_PURGE
"""

from __future__ import annotations

import os
import sys
import time
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bench.common import emit
from services.sink.store import SCHEMA, DeltaTrainingStore

CHUNK = 100_000
POSTS_PER_USER = 10


def build(store: DeltaTrainingStore, rows: int, users: int, seed: int = 6) -> int:
    from deltalake import write_deltalake

    rng = random.Random(seed)
    words = ["le", "la", "les", "un", "une", "des", "et", "ou", "the", "a", "of", "to"]
    texts = pa.array([" ".join(rng.choices(words, k=12)) + f" #{i}" for i in range(5000)])
    base = 1_748_340_000_000_000
    files = 0
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        ids = pa.array(range(start, start + n), pa.int64())
        user_ids = pa.array([rng.randrange(users) for _ in range(n)], pa.int64())
        table = pa.table(
            {
                "post_id": pc.binary_join_element_wise("post-", ids.cast(pa.string()), ""),
                "user_id": pc.binary_join_element_wise("user-", user_ids.cast(pa.string()), ""),
                "created_at": pc.add(pc.multiply(ids, 1000), base).cast(pa.timestamp("us", tz="UTC")),
                "text": texts.take(pa.array([rng.randrange(len(texts)) for _ in range(n)])),
                "lang": pa.array(["fr"] * n, pa.string()),
                "country": pa.array(["FR"] * n, pa.string()),
                "ingested_at": pc.add(pc.multiply(ids, 1000), base + 5_000_000).cast(pa.timestamp("us", tz="UTC")),
            },
            schema=SCHEMA,
        )
        write_deltalake(store._fresh(), table, mode="append")
        files += 1
    return files


def main(directory: Path, rows: int, purge_users: int) -> dict:
    users = rows // POSTS_PER_USER
    store = DeltaTrainingStore(str(directory / "training"))
    started = time.perf_counter()
    files = build(store, rows, users)
    build_seconds = time.perf_counter() - started
    victims = [f"user-{u}" for u in random.Random(1).sample(range(users), purge_users)]

    started = time.perf_counter()
    removed = store.purge(victims)
    purge_seconds = time.perf_counter() - started
    started = time.perf_counter()
    vacuum = store.vacuum()
    vacuum_seconds = time.perf_counter() - started

    deleted = sum(len(v) for v in removed.values())
    remaining = store.read(["user_id"]).num_rows
    if remaining != rows - deleted:
        raise AssertionError(f"{remaining} rows left, expected {rows - deleted}")
    total = purge_seconds + vacuum_seconds
    return {
        "table_rows": rows, "files": files, "users": purge_users, "rows_deleted": deleted, "build_seconds": build_seconds,
        "purge_seconds": purge_seconds, "vacuum_seconds": vacuum_seconds, "files_vacuumed": vacuum.files_removed,
        "total_seconds": total, "rows_per_second": rows / total,
    }


if __name__ == "__main__":
    emit(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
    # Skip interpreter teardown: delta-rs/Arrow worker threads sometimes abort it
    # ("terminate called without an active exception") after the work is done.
    os._exit(0)


def run(work: Path, rows: int, users: int) -> dict:
    from bench.common import run_child

    directory = work / "purge"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return run_child(["-m", "bench.purge", str(directory), str(rows), str(users)], log=work / "purge.log", timeout=900)
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
