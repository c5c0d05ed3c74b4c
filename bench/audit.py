"""10. The audit trail's cost: ingest's throughput with and without it, and the Delta audit
table's size per million posts.

Without: ingest over the backlog, its drop counts never emitted (the per-drop counter still
runs: it is part of the code). With: the same with the production defaults (drop counts every
10 s), while the audit writer runs as a process on the same broker and chains the objections
and the counts (summed per user, day and reason).
Runs alternate (without, with, without, with...) and the fastest of each is kept, in one run
of `make bench`. Then the audit table's bytes (Parquet and log) per million posts read.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import Dataset, run_child
from bench.system import Services
from bench.throughput import _prepare_consentry


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _one(bootstrap: str, data: Dataset, work: Path, run: int, with_audit: bool) -> dict:
    tag = "with" if with_audit else "without"
    # With: the production defaults (drop counts every 10 s, summed by the writer every 10 min).
    # Without: ingest never emits its counts and no writer runs.
    extra = {"CONSENTRY_AUDIT_VERIFY_INTERVAL_S": "0"} if with_audit else {"CONSENTRY_DROP_COUNTS_INTERVAL_S": "1e9"}
    services = Services(bootstrap, f"aud{tag}{run}-", work / f"audit-{tag}{run}", extra)
    _prepare_consentry(bootstrap, data, services)
    try:
        if with_audit:
            services.start("audit-writer")
        result = run_child(["-m", "bench.ingest_run", str(len(data.posts))], env=services.env, log=work / f"audit-{tag}{run}.log")
        if result["accepted"] != data.expected_accepted:
            raise AssertionError(f"ingest forwarded {result['accepted']} posts, expected {data.expected_accepted}")
        if with_audit:
            _caught_up(services, written_at=time.monotonic())
            services.stop()  # the writer chains the drop counts it has summed as it stops
            result.update(_table_size(services, data, result))
        return result
    finally:
        services.stop()


def _caught_up(services: Services, written_at: float, timeout: float = 180) -> None:
    """The audit writer has read every source record: its lag gauges exist and are all 0, in a
    sample refreshed after ingest's last records were written (`written_at`). The gauges are
    refreshed at most every `Bounds.stats_seconds`: a 0 read sooner can predate ingest's last
    drop counts (the bench once stopped the writer on such a stale 0 and missed 14,996 drops)."""
    import httpx

    from consentry.kafka_worker import Bounds
    from consentry.scrape import parse_metrics

    fresh_from = written_at + Bounds.stats_seconds + 1.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if time.monotonic() < fresh_from:
            time.sleep(0.5)
            continue
        try:
            samples = parse_metrics(httpx.get(f"{services.url('audit-writer')}/metrics", timeout=5).text)
        except httpx.HTTPError:
            samples = {}
        lags = list(samples.get("consentry_consumer_lag", {}).values())
        if lags and sum(lags) == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("the audit writer did not catch up")


def _table_size(services: Services, data: Dataset, ingest: dict) -> dict:
    """The audit table once the writer stopped: a record per objection, the drops summed."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    import orjson

    uri = services.root / "var" / "audit"
    table = DeltaTable(str(uri)).to_pyarrow_dataset().to_table(columns=["fact", "record"])
    drops = table.filter(pc.equal(table["fact"], "dropped"))
    counted = sum(orjson.loads(r)["count"] for r in drops["record"].to_pylist())
    received = table.filter(pc.equal(table["fact"], "received")).num_rows
    if received != len(data.objections) or counted != ingest["dropped"]:
        raise AssertionError(f"the audit table holds {received} objections and {counted} drops, expected {len(data.objections)} and {ingest['dropped']}")
    size = _dir_bytes(uri)
    return {"audit_records": table.num_rows, "drop_records": drops.num_rows, "audit_bytes": size,
            "audit_bytes_per_million_posts": size * 1_000_000 / len(data.posts)}


def run(bootstrap: str, data: Dataset, work: Path, repeat: int) -> dict:
    without, with_ = [], []
    for n in range(max(repeat, 2)):
        without.append(_one(bootstrap, data, work, n, with_audit=False))
        with_.append(_one(bootstrap, data, work, n, with_audit=True))
    best_without = max(without, key=lambda r: r["rate"])
    best_with = max(with_, key=lambda r: r["rate"])
    # Ingest's own CPU per post: on a shared machine wall-clock rates swing with the neighbours' load.
    cpu_without = min(r["cpu_seconds"] for r in without) / len(data.posts)
    cpu_with = min(r["cpu_seconds"] for r in with_) / len(data.posts)
    return {
        "rate": best_with["rate"],
        "rate_without": best_without["rate"],
        "apart": 1 - best_with["rate"] / best_without["rate"],
        "cpu_us_per_post_with": cpu_with * 1e6,
        "cpu_us_per_post_without": cpu_without * 1e6,
        "cpu_apart": cpu_with / cpu_without - 1,
        "cpu_runs_with": [round(r["cpu_seconds"], 2) for r in with_],
        "cpu_runs_without": [round(r["cpu_seconds"], 2) for r in without],
        "runs_without": [round(r["rate"]) for r in without],
        "runs_with": [round(r["rate"]) for r in with_],
        "drop_count_records": best_with["drop_count_records"],
        "drop_records": best_with["drop_records"],
        "dropped": best_with["dropped"],
        "audit_records": best_with["audit_records"],
        "audit_bytes": best_with["audit_bytes"],
        "audit_bytes_per_million_posts": best_with["audit_bytes_per_million_posts"],
        "posts": len(data.posts),
        "objections": len(data.objections),
    }

