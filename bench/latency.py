"""4. Enforcement latency: the whole system (consent, ingest, sink, gateway) under a steady
post load; people object through the gateway; each objection's `enforced` and `purged`
stamps (the receipts the consent table records, shown by GET /v1/objections/me) against
the `received_at` of its 202.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import orjson

from bench.common import ROOT, Dataset, percentile, read_topic
from bench.common import run as run_async
from bench.system import SECRET, Services
from bench.throughput import seed_consent
from consentry.domain.model import ENFORCED, PURGED, Invalid
from consentry.wire import parse_receipt
from consentry.timeutil import parse_rfc3339
from services.gateway.auth import make_token

WARMUP_S = 8.0
OBJECTING_S = 30.0
OBJECTIONS_PER_S = 8.0
SETTLE_S = 25.0  # the load goes on while the last purges complete


def _summary(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99), "max": max(values) if values else float("nan"), "n": len(values)}


def run(bootstrap: str, data: Dataset, work: Path, ingest_capacity: float | None) -> dict:
    rate = 0.55 * ingest_capacity if ingest_capacity else 30_000.0
    users = len(data.users)
    with Services(bootstrap, "lat-", work / "latency") as services:
        services.create_topics()
        # Every user of the load was told long ago (notice rule on) and nobody objected yet.
        seed_consent(bootstrap, replace(data, objections=[]), services)
        services.start("consent", "ingest", "sink", "gateway")
        duration = WARMUP_S + OBJECTING_S + SETTLE_S
        load_log = open(work / "loadgen.log", "ab")
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", bootstrap, services.topics.posts, str(rate), str(duration), str(users)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=load_log, text=True,
        )
        try:
            time.sleep(WARMUP_S)
            objections = _object(services, data)
            out, _ = load.communicate(timeout=duration + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        load_result = orjson.loads(out.strip().splitlines()[-1])
        receipts = _read_receipts(services)
        enforced, purged, missing = [], [], 0
        for objection_id, received_us in objections.items():
            stamps = receipts.get(objection_id, {})
            if ENFORCED in stamps:
                enforced.append((stamps[ENFORCED] - received_us) / 1e6)
            if PURGED in stamps:
                purged.append((stamps[PURGED] - received_us) / 1e6)
            else:
                missing += 1
        by_user = {data.users[i]: oid for i, oid in enumerate(objections)}
        applied = _consent_applied(services, by_user)
        to_consent = [(applied[u] - objections[o]) / 1e6 for u, o in by_user.items() if u in applied]
        status = _check_status(services, data, objections)
        leaked = _leaked_rows(services, work, set(data.users[: len(objections)]))
        return {
            "objections": len(objections),
            "post_rate": load_result["rate"],
            "load_share": load_result["rate"] / ingest_capacity if ingest_capacity else float("nan"),
            "enforced": _summary(enforced),
            "consent_applied": _summary(to_consent),
            "purged": _summary(purged),
            "not_purged": missing,
            "complete": missing == 0 and status == "purged" and leaked == 0,
            "sample_status": status,
            "leaked_rows": leaked,
            "loadgen_max_backlog_s": load_result["max_backlog_s"],
        }


def _object(services: Services, data: Dataset) -> dict[str, int]:
    """Object for the first users of the load, one at a time at a steady pace."""
    url = f"{services.url('gateway')}/v1/objections"
    received: dict[str, int] = {}
    started = time.monotonic()
    n = int(OBJECTING_S * OBJECTIONS_PER_S)
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            time.sleep(max(0.0, started + i / OBJECTIONS_PER_S - time.monotonic()))
            user = data.users[i]
            response = client.post(url, headers={"Authorization": f"Bearer {make_token(SECRET, user)}"}, json={"channel": "web"})
            response.raise_for_status()
            body = response.json()
            received[body["objection_id"]] = parse_rfc3339(body["received_at"])  # type: ignore[assignment]
    return received


def _read_receipts(services: Services) -> dict[str, dict[str, int]]:
    stamps: dict[str, dict[str, int]] = {}
    for record in run_async(read_topic(services.bootstrap, services.topics.receipts)):
        receipt = parse_receipt(record.value)
        if type(receipt) is Invalid:
            continue
        for objection_id in receipt.objection_ids:
            stamps.setdefault(objection_id, {}).setdefault(receipt.kind, receipt.at_us)
    return stamps


def _consent_applied(services: Services, objection_of: dict[str, str]) -> dict[str, int]:
    """When the consent service first wrote each objector's row holding their objection."""
    return first_applied(run_async(read_topic(services.bootstrap, services.topics.consent_state)), objection_of)


def first_applied(records, objection_of: dict[str, str]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """{user: µs} the timestamp of the first changelog record of `user` (records in the order
    read) that holds their objection `objection_of[user]`: the gateway + consent share of the
    enforcement latency. Rows written before (the run seeds every user's row, told long ago)
    do not count: taking the user's first record made the figure negative (p50 −33 s)."""
    first: dict[str, int] = {}
    for record in records:
        user = record.key.decode()
        objection_id = objection_of.get(user)
        if objection_id is None or user in first or record.value is None:
            continue
        if b'"objection_id":"' + objection_id.encode() + b'"' in record.value:
            first[user] = record.timestamp * 1000
    return first


def _check_status(services: Services, data: Dataset, objections: dict[str, int]) -> str:
    """What the first objector sees on GET /v1/objections/me (the loop closes)."""
    response = httpx.get(
        f"{services.url('gateway')}/v1/objections/me",
        headers={"Authorization": f"Bearer {make_token(SECRET, data.users[0])}"}, timeout=10,
    )
    return response.json().get("status", f"HTTP {response.status_code}")


def _leaked_rows(services: Services, work: Path, objectors: set[str]) -> int:
    from deltalake import DeltaTable

    table = DeltaTable(str(work / "latency" / "var" / "training"))
    users = table.to_pyarrow_dataset().to_table(columns=["user_id"]).column("user_id").to_pylist()
    return sum(1 for u in users if u in objectors)
