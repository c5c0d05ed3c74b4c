"""Measurements 1-3: the limit, the peer and Consentry over the same backlog of posts."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import ROOT, Dataset, commit_to_end, create_topics, produce, run_child
from bench.system import Services
from consentry.wire import encode_notice, encode_objection
from consentry.scrape import parse_metrics as parse, total

PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"


def limit(bootstrap: str, data: Dataset, work: Path, run: int = 0) -> dict:
    source, sink = f"limit{run}-posts", f"limit{run}-out"
    asyncio.run(create_topics(bootstrap, [source, sink]))
    asyncio.run(produce(bootstrap, source, data.posts))
    result = run_child(["-m", "bench.limit", bootstrap, source, sink, str(len(data.posts))], log=work / "limit.log")
    return {"posts": result["posts"], "seconds": result["seconds"], "rate": result["rate"], "cpu_seconds": result["cpu_seconds"]}


def peer(bootstrap: str, data: Dataset, work: Path, run: int = 0) -> dict:
    if not PEER_PYTHON.exists():
        return {"skipped": "no .venv-peer (make bench creates it)"}
    posts, objections, out = f"peer{run}-posts", f"peer{run}-objections", f"peer{run}-out"
    asyncio.run(create_topics(bootstrap, [posts, objections, out]))
    # Objections first: their timestamps precede every post, as join_asof needs.
    asyncio.run(produce(bootstrap, objections, [(e.user_id.encode(), encode_objection(e)) for e in data.objections]))
    asyncio.run(produce(bootstrap, posts, data.posts))
    state = work / "quix-state"
    shutil.rmtree(state, ignore_errors=True)
    result = run_child(
        ["bench/peer_quix.py", bootstrap, posts, objections, out, str(data.expected_accepted), str(state)],
        python=str(PEER_PYTHON), log=work / "peer.log", timeout=900,
    )
    seconds = result["seconds"]
    return {"posts": len(data.posts), "forwarded": result["forwarded"], "seconds": seconds, "rate": len(data.posts) / seconds}


def _prepare_consentry(bootstrap: str, data: Dataset, services: Services) -> None:
    """Topics, the consent table's changelog as the consent service leaves it after the
    objections were applied and enforced, and the posts backlog."""
    services.create_topics()
    seed_consent(bootstrap, data, services)
    asyncio.run(produce(bootstrap, services.topics.posts, data.posts))


def seed_consent(bootstrap: str, data: Dataset, services: Services) -> None:
    """Notices (every user told long ago) and objections on their topics, the consent table's
    changelog as the consent service leaves them once applied, and the consent group's
    offsets at the end of its inputs: a consent service restarted after doing that work."""
    topics = services.topics
    asyncio.run(produce(bootstrap, topics.notices, [(n.user_id.encode(), encode_notice(n)) for n in data.notices]))
    asyncio.run(produce(bootstrap, topics.objections, [(e.user_id.encode(), encode_objection(e)) for e in data.objections]))
    asyncio.run(produce(bootstrap, topics.consent_state, data.consent_changelog()))
    asyncio.run(commit_to_end(bootstrap, topics.group("consent"), [topics.objections, topics.receipts, topics.notices]))


def ingest(bootstrap: str, data: Dataset, work: Path, profile: Path | None = None, run: int = 0) -> dict:
    services = Services(bootstrap, f"ing{run}-", work / f"ingest{run}")
    _prepare_consentry(bootstrap, data, services)
    args = ["-m", "bench.ingest_run", str(len(data.posts))]
    python = None
    if profile is not None:
        python = str(ROOT / ".venv" / "bin" / "py-spy")
        args = ["record", "--rate", "200", "--format", "raw", "-o", str(profile), "--", str(ROOT / ".venv" / "bin" / "python"), *args]
    result = run_child(args, env=services.env, log=work / "ingest.log", python=python)
    if result["accepted"] != data.expected_accepted:
        raise AssertionError(f"ingest forwarded {result['accepted']} posts, expected {data.expected_accepted}")
    return result


def full_path(bootstrap: str, data: Dataset, work: Path, profile: Path | None = None) -> dict:
    """Ingest and the sink as processes, from the posts backlog to rows committed in Delta."""
    with Services(bootstrap, "full-", work / "full") as services:
        _prepare_consentry(bootstrap, data, services)
        services.start("sink", "ingest", wait=False)
        if profile is not None:
            subprocess.Popen([str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--rate", "200", "--format", "raw", "--threads",
                              "-o", str(profile), "--pid", str(services.pid("sink"))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ingest_metrics = f"{services.url('ingest')}/metrics"
        sink_metrics = f"{services.url('sink')}/metrics"
        started = None
        deadline = time.monotonic() + 300
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                for name, process in services.processes.items():
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited: {services.log(name)[-2000:]}")
                try:
                    if started is None:
                        if total(parse(client.get(ingest_metrics).text), "consentry_ingest_posts_in_total") > 0:
                            started = time.perf_counter()
                    elif total(parse(client.get(sink_metrics).text), "consentry_sink_rows_appended_total") >= data.expected_accepted:
                        finished = time.perf_counter()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            else:
                raise TimeoutError("the sink did not store every accepted post in time")
        seconds = finished - started
        from deltalake import DeltaTable

        rows = DeltaTable(str(work / "full" / "var" / "training")).to_pyarrow_dataset().count_rows()
        if rows != data.expected_accepted:
            raise AssertionError(f"Delta holds {rows} rows, expected {data.expected_accepted}")
        return {"posts": len(data.posts), "rows": rows, "seconds": seconds, "rate": len(data.posts) / seconds, "rows_rate": rows / seconds}
