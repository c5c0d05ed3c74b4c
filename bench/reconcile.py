"""Reconciliation at scale: one pass (services.sink.reconcile.run_pass, what the sink and
`consentry reconcile` run) over OBJECTED objected users and a ROWS-row training table.

The consent state changelog holds one record per objected user, as the consent service leaves
it once the objection was enforced and purged (its own domain code writes the bytes). The
table is written the way the sink writes it (appends of 100,000 rows; 5 posts per user, each
user's posts spread over the files) by users who never objected, except LEAKED objected users
whose rows a lost marker left behind. The pass is run twice: the first finds and deletes the
leaked rows, the second (the steady state) finds nothing.

    python -m bench.reconcile [--objected 1000000] [--rows 10000000] [--leaked 1000] [--dir DIR]

(psutil comes with the `bench` extra: `pip install -e ".[bench]"`, which `make bench` runs.)

On the embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set. Not part of `make test`
(building the data takes minutes); docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bench.common import enforced_state, free_port
from consentry.domain.model import ObjectionEvent
from consentry.kafka import BatchSender, ensure_topics
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from services.sink.reconcile import run_pass
from services.sink.settings import SinkSettings
from services.sink.store import SCHEMA, DeltaTrainingStore

CHUNK = 100_000
POSTS_PER_USER = 5
TEMPLATE_USER = "user-TEMPLATE9"  # as long as "user-%09d"
HOUR = 3_600_000_000


async def publish_changelog(settings: SinkSettings, users: list[str], at_us: int) -> float:
    """One enforced-and-purged consent state record per user (the template's bytes, the user's
    name swapped in: a million records fast)."""
    from aiokafka import AIOKafkaProducer

    template = enforced_state(ObjectionEvent(f"obj-{TEMPLATE_USER}", TEMPLATE_USER, "object", at_us, "web"), at_us)
    marker = TEMPLATE_USER.encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024, max_request_size=4 << 20)
    await producer.start()
    started = time.perf_counter()
    try:
        sender = BatchSender(producer)
        for n, user in enumerate(users, start=1):
            key = user.encode()
            sender.append(settings.topics.consent_state, home_partition(user, settings.partitions), key, template.replace(marker, key))
            if n % 50_000 == 0:
                await sender.send()
        await sender.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


def build_table(store: DeltaTrainingStore, rows: int, table_users: list[str], leaked: list[str], at_us: int, seed: int = 12) -> float:
    """`rows` rows of `table_users`; the leaked users' posts among them, ingested 9 hours ago
    (their objection is 10 hours old: they should have been purged)."""
    from deltalake import write_deltalake

    rng = random.Random(seed)
    everyone = pa.array(table_users + leaked, pa.string())
    texts = pa.array([f"words of a post number {i} " * 4 for i in range(1000)])
    started = time.perf_counter()
    base = at_us - 30 * 24 * HOUR
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        ids = pa.array(range(start, start + n), pa.int64())
        who = pa.array([rng.randrange(len(table_users)) for _ in range(n)], pa.int64())
        stamps = pc.add(pc.multiply(ids, 100), base).cast(pa.timestamp("us", tz="UTC"))
        write_deltalake(store._fresh(), pa.table({
            "post_id": pc.binary_join_element_wise("post-", ids.cast(pa.string()), ""),
            "user_id": everyone.take(who),
            "created_at": stamps,
            "text": texts.take(pa.array([rng.randrange(len(texts)) for _ in range(n)])),
            "lang": pa.array(["fr"] * n, pa.string()),
            "country": pa.array(["FR"] * n, pa.string()),
            "ingested_at": stamps,
        }, schema=SCHEMA), mode="append")
    # The leaked users' posts, stored while they objected.
    leak_rows = [
        {"post_id": f"leak-{u}-{i}", "user_id": u, "created_at": "2000-01-01T00:00:00Z", "text": "leaked", "lang": None, "country": None,
         "ingested_at": "2000-01-01T00:00:01Z"}
        for u in leaked for i in range(POSTS_PER_USER)
    ]
    if leak_rows:
        store.append(leak_rows)
    return time.perf_counter() - started


class RssSampler:
    """The process's largest resident set size while it runs (sampled every 50 ms)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def measure(bootstrap: str, flavor: str, work: Path, objected: int, rows: int, leaked: int) -> dict:
    settings = SinkSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=f"rec{uuid.uuid4().hex[:8]}-",
                            partitions=8, training_store_uri=str(work / "training"))
    await ensure_topics(settings, [s for s in settings.topics.specs() if s.name == settings.topics.consent_state])
    at = now_us() - 10 * HOUR
    table_users = [f"user-{i:09d}" for i in range(max(rows // POSTS_PER_USER, 1))]
    leaked_users = [f"user-{i:09d}" for i in range(len(table_users), len(table_users) + leaked)]
    clean_objected = [f"user-{i:09d}" for i in range(len(table_users) + leaked, len(table_users) + objected)]
    publish_seconds = await publish_changelog(settings, leaked_users + clean_objected, at)
    print(f"changelog: {objected:,} objected users published in {publish_seconds:.1f}s", flush=True)
    store = DeltaTrainingStore(settings.store_uri)
    build_seconds = await asyncio.to_thread(build_table, store, rows, table_users, leaked_users, at)
    stats = store.stats()
    print(f"table: {rows + leaked * POSTS_PER_USER:,} rows in {stats.live_files} files ({stats.live_bytes / 2**20:.0f} MiB), "
          f"built in {build_seconds:.1f}s", flush=True)

    with RssSampler() as first_memory:
        first = await run_pass(settings, store)
    with RssSampler() as second_memory:
        second = await run_pass(settings, store)
    expected = leaked * POSTS_PER_USER
    if first.figures.rows_purged != expected or second.figures.rows_purged != 0:
        raise AssertionError(f"first pass deleted {first.figures.rows_purged} rows (expected {expected}), second {second.figures.rows_purged}")
    result = {
        "objected_users": first.figures.users, "table_rows": first.figures.rows_scanned, "files": stats.live_files,
        "leaked_rows_deleted": first.figures.rows_purged,
        "first_pass_seconds": round(first.figures.seconds, 1),
        "first_read_consent_seconds": round(first.users_seconds, 1), "first_scan_seconds": round(first.scan_seconds, 1),
        "first_delete_seconds": round(first.delete_seconds, 1),
        "steady_pass_seconds": round(second.figures.seconds, 1),
        "steady_read_consent_seconds": round(second.users_seconds, 1), "steady_scan_seconds": round(second.scan_seconds, 1),
        "rss_before_pass_mib": round(first_memory.baseline / 2**20),
        "first_pass_rss_growth_mib": round((first_memory.peak - first_memory.baseline) / 2**20),
        "steady_pass_rss_growth_mib": round((second_memory.peak - second_memory.baseline) / 2**20),
        "load_average": round(os.getloadavg()[0], 1),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objected", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--leaked", type=int, default=1_000, help="objected users whose rows are still in the table")
    parser.add_argument("--dir", type=Path, help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="consentry-bench-reconcile-"))
    work.mkdir(parents=True, exist_ok=True)
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    try:
        if external:
            bootstrap, flavor = external, "kafka"
        else:
            from consentry_cli.broker import EmbeddedBroker

            broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
            broker.start()
            bootstrap, flavor = broker.bootstrap, "tansu"
        result = asyncio.run(measure(bootstrap, flavor, work, args.objected, args.rows, args.leaked))
    finally:
        if broker is not None:
            broker.stop()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:>{width}}: {value:,}" if isinstance(value, int) else f"{key:>{width}}: {value}")


if __name__ == "__main__":
    main()
