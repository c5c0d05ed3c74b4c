"""5. Gateway: objections per second and latency, with wrk (Debian's, driven by a Lua
script that files each objection as a different user) in its own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import orjson

from bench.common import ROOT, end_offsets
from bench.common import run as run_async
from bench.system import SECRET, Services
from services.gateway.auth import make_token

CONNECTIONS = (16, 32, 64)
DURATION_S = 8
WARMUP_S = 3
TOKENS = 60_000


def _wrk(url: str, tokens: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(ROOT / "bench" / "objections.lua"), url, "--", str(tokens)],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    return orjson.loads(lines[-1])


def run_gateway(bootstrap: str, work: Path, profile: Path | None = None, extra_env: dict[str, str] | None = None) -> dict:
    """wrk at each of CONNECTIONS; the result is the highest rate whose p99 is under 50 ms
    (or, when none is, the highest rate), with every point kept."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (scripts/ensure-wrk.sh installs Debian's)"}
    tokens = work / "tokens.txt"
    if not tokens.exists():
        tokens.write_text("\n".join(make_token(SECRET, f"gw-user-{i:06d}", ttl_seconds=3600) for i in range(TOKENS)) + "\n")
    prefix = f"gw{len(extra_env or {})}-"
    points = []
    # wrk sends everything from one address: the per-address limit would answer 429 (it is
    # meant for one client, not for a load generator). The per-user limit stays on.
    env = {"CONSENTRY_RATE_LIMIT_ADDRESS_PER_S": "0", **(extra_env or {})}
    with Services(bootstrap, prefix, work / prefix, env) as services:
        services.create_topics()
        services.start("gateway")
        url = services.url("gateway")
        _wrk(url, tokens, WARMUP_S, CONNECTIONS[-1])
        for connections in CONNECTIONS:
            spy = None
            if profile is not None and connections == CONNECTIONS[-1]:
                spy = subprocess.Popen([str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--rate", "200", "--subprocesses", "--format", "raw",
                                        "-o", str(profile), "--pid", str(services.pid("gateway")), "--duration", str(DURATION_S)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            result = _wrk(url, tokens, DURATION_S, connections)
            if spy is not None:
                spy.wait(timeout=60)
            seconds = result["duration_us"] / 1e6
            errors = result["non_2xx"] + result["connect_errors"] + result["read_errors"] + result["write_errors"] + result["timeouts"]
            points.append({
                "tool": "wrk", "connections": connections, "duration": seconds, "requests": result["requests"],
                "rate": (result["requests"] - errors) / seconds, "errors": errors,
                "p50_ms": result["p50_us"] / 1000, "p90_ms": result["p90_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
                "max_ms": result["max_us"] / 1000,
            })
        published = run_async(end_offsets(bootstrap, services.topics.objections))
    within = [p for p in points if p["p99_ms"] < 50 and p["errors"] == 0]
    best = max(within or points, key=lambda p: p["rate"])
    return {**best, "points": points, "objections_in_kafka": published}


def run(bootstrap: str, work: Path, profile: Path | None = None) -> dict:
    """One gateway process, then one per core (GATEWAY_WORKERS); the table shows the latter."""
    single = run_gateway(bootstrap, work, profile)
    workers = os.cpu_count() or 1
    if workers < 2 or "skipped" in single:
        return {**single, "workers": 1}
    scaled = run_gateway(bootstrap, work, None, {"GATEWAY_WORKERS": str(workers)})
    return {**scaled, "workers": workers, "single_process": single}
