"""3c. The full path with one sink and with two (issue 13): does a second sink raise the rows/s?

    python -m bench.two_sinks [--posts 400000] [--partitions 8] [--flush-seconds 1.0] [--batch-rows 200000]
                              [--sinks 1,2] [--repeat 2] [--profile DIR]
    python -m bench --only sinks        (the same step inside `make bench`, on its broker)

Each run: fresh topics under a prefix of their own, the consent table's changelog seeded (as
bench/throughput.py does), `consentry sink` N times on one Delta table (each its own process,
port and data directory; one consumer group: each owns the buckets of its partitions of
training.posts), then `consentry ingest`; all ready. Timed from the first post produced (this
process publishes the data set to `posts`) until the sinks' `consentry_sink_rows_appended_total`
add up to every eligible post, i.e. until the last row is committed in Delta; the table is then
checked (every eligible post, none twice). Runs alternate 1, 2, 1, 2 ... sinks and the fastest
of each size counts (the machine is shared).

What bounds it, recorded in every run: CPU-seconds (user + system) of ingest, each sink, the
broker and this process (the producer) over the timed window against the machine's cores x
wall; when ingest had forwarded everything; the sinks' commits and their mean time (one commit
= purge + de-duplication look-up in the batch's buckets + Parquet write + Delta commit) and the
commits overtaken by another writer's. `--profile DIR` records py-spy profiles of ingest and
each sink (python -m bench.profile_summary FILE prints them).

Reconciliation, compaction and vacuum are off in these runs (their first runs come a minute
after start; they are not the path measured).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import PARTITIONS, ROOT, Dataset, commit_to_end, emit, free_port, make_dataset, produce, wait_ready
from bench.system import SECRET
from consentry.kafka import ensure_topics
from consentry.settings import CommonSettings
from consentry.wire import encode_notice, encode_objection

SINKS = (1, 2)
TARGET = 1.6  # issue 13: two sinks >= 1.6x one sink's rows/s
APPENDED = "consentry_sink_rows_appended_total"
COMMITS = "consentry_sink_batches_total"
COMMIT_SECONDS = "consentry_sink_commit_seconds_sum"
CONFLICTS = "consentry_sink_commit_conflicts_total"
DUPLICATES = "consentry_sink_duplicates_total"
INGEST_ACCEPTED = "consentry_ingest_accepted_total"


@dataclass
class Member:
    name: str  # "ingest", "sink1", "sink2" ...
    service: str
    process: subprocess.Popen[bytes]
    port: int
    cpu_at_start: float = 0.0


@dataclass
class FullPath:
    """Ingest and `sinks` sink processes under one topic prefix, on one Delta table."""

    bootstrap: str
    prefix: str
    root: Path
    partitions: int
    sink_env: dict[str, str] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = CommonSettings(kafka_bootstrap_servers=self.bootstrap, topic_prefix=self.prefix, partitions=self.partitions, broker_flavor="tansu")
        self.topics = self.settings.topics
        self.table = self.root / "training"
        self.http = httpx.Client(timeout=5)  # one connection per service: the polling's CPU is the machine's too

    def prepare(self, data: Dataset) -> None:
        """Topics, and the consent state as the consent service leaves it (bench/throughput.py's
        seed_consent, at this run's partition count); the posts come in the timed window."""
        asyncio.run(ensure_topics(self.settings))
        t, p = self.topics, self.partitions
        asyncio.run(produce(self.bootstrap, t.notices, [(n.user_id.encode(), encode_notice(n)) for n in data.notices], partitions=p))
        asyncio.run(produce(self.bootstrap, t.objections, [(e.user_id.encode(), encode_objection(e)) for e in data.objections], partitions=p))
        asyncio.run(produce(self.bootstrap, t.consent_state, data.consent_changelog(), partitions=p))
        asyncio.run(commit_to_end(self.bootstrap, t.group("consent"), [t.objections, t.receipts, t.notices], partitions=p))

    def start(self, service: str, timeout: float = 180) -> Member:
        n = sum(m.service == service for m in self.members) + 1
        name = service if service == "ingest" else f"{service}{n}"
        port = free_port()
        env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "CONSENTRY_BROKER_FLAVOR": "tansu",
            "CONSENTRY_TOPIC_PREFIX": self.prefix, "CONSENTRY_PARTITIONS": str(self.partitions), "CONSENTRY_JWT_SECRET": SECRET,
            "CONSENTRY_DATA_DIR": str(self.root / f"var-{name}"), f"CONSENTRY_{service.upper()}_PORT": str(port),
        }
        if service == "sink":
            env.update({
                "TRAINING_STORE_URI": str(self.table),  # one table for every sink
                "CONSENTRY_RECONCILE_INTERVAL_S": "0", "CONSENTRY_COMPACT_INTERVAL_S": "0", "CONSENTRY_VACUUM_INTERVAL_S": "0",
                **self.sink_env,
            })
        log = open(self.root / f"{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "consentry_cli", service], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        member = Member(name, service, process, port)
        self.members.append(member)
        self.wait_ready(member, timeout)
        return member

    def log(self, member: Member) -> str:
        path = self.root / f"{member.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, member: Member, timeout: float) -> None:
        wait_ready(member.process, f"http://127.0.0.1:{member.port}", member.name, time.monotonic() + timeout,
                   lambda: self.log(member)[-3000:])

    def sinks(self) -> list[Member]:
        return [m for m in self.members if m.service == "sink"]

    def assigned_partitions(self) -> int:
        """Partitions the sinks say they write (readyz: "writing N partitions")."""
        out = 0
        for m in self.sinks():
            detail = self.http.get(f"http://127.0.0.1:{m.port}/readyz").json().get("detail", "")
            out += int(detail.split()[1]) if detail.startswith("writing ") else 0
        return out

    def metric(self, member: Member, *names: str) -> list[float]:
        """Each sample `name` summed over its labels (a scan of the lines, not the Prometheus
        parser: this process polls while the path runs, and its CPU is the machine's too)."""
        text = self.http.get(f"http://127.0.0.1:{member.port}/metrics").text
        return [sample_total(text, name) for name in names]

    def check_alive(self) -> None:
        for m in self.members:
            if m.process.poll() is not None:
                raise RuntimeError(f"{m.name} exited with {m.process.returncode}: {self.log(m)[-3000:]}")

    def stop(self, timeout: float = 30) -> None:
        self.http.close()
        for m in self.members:
            if m.process.poll() is None:
                os.killpg(m.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for m in self.members:
            try:
                m.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(m.process.pid, signal.SIGKILL)
                m.process.wait()


def sample_total(text: str, name: str) -> float:
    """The sum of the samples called `name` in a Prometheus text exposition."""
    out = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            out += float(line.rsplit(" ", 1)[1])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of a process and its children so far."""
    import psutil  # the [bench] extra

    try:
        process = psutil.Process(pid)
        return sum(t.user + t.system for t in (q.cpu_times() for q in (process, *process.children(recursive=True))))
    except psutil.NoSuchProcess:
        return 0.0


def broker_pid(bootstrap: str) -> int | None:
    """The embedded broker's process: the one whose command line listens on `bootstrap`."""
    import psutil  # the [bench] extra

    wanted = f"tcp://{bootstrap}"
    for process in psutil.process_iter(["cmdline"]):
        if wanted in (process.info.get("cmdline") or []):
            return process.pid
    return None


def one_run(bootstrap: str, data: Dataset, root: Path, prefix: str, sinks: int, partitions: int, sink_env: dict[str, str],
            profile: Path | None = None, timeout: float = 600) -> dict:
    path = FullPath(bootstrap, prefix, root, partitions, sink_env)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        path.prepare(data)
        for _ in range(sinks):  # one after the other: the first creates the table
            path.start("sink")
        ingest = path.start("ingest")
        deadline = time.monotonic() + 120
        while path.assigned_partitions() != partitions:  # the group settled: every partition has its sink
            path.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sinks write {path.assigned_partitions()} of {partitions} partitions after 120 s")
            time.sleep(0.1)
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            for m in path.members:
                spies.append(subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--rate", "100", "--nonblocking", "--format", "raw", "--threads",
                     "-o", str(profile / f"{sinks}sinks-{m.name}.txt"), "--pid", str(m.process.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        broker = broker_pid(bootstrap)
        for m in path.members:
            m.cpu_at_start = cpu_seconds(m.process.pid)
        broker_cpu = cpu_seconds(broker) if broker else 0.0
        own_cpu = time.process_time()
        started = time.perf_counter()
        asyncio.run(produce(bootstrap, path.topics.posts, data.posts, partitions=partitions))
        produced = time.perf_counter() - started
        ingest_done = None
        end = time.monotonic() + timeout
        while True:
            path.check_alive()
            if ingest_done is None and path.metric(ingest, INGEST_ACCEPTED)[0] >= data.expected_accepted:
                ingest_done = time.perf_counter() - started
            appended = sum(path.metric(m, APPENDED)[0] for m in path.sinks())
            if appended >= data.expected_accepted:
                seconds = time.perf_counter() - started
                break
            if time.monotonic() > end:
                raise TimeoutError(f"the sinks stored {appended:,.0f} of {data.expected_accepted:,} rows in {timeout:.0f} s")
            time.sleep(0.1)
        cpu = {m.name: cpu_seconds(m.process.pid) - m.cpu_at_start for m in path.members}
        if broker:
            cpu["broker"] = cpu_seconds(broker) - broker_cpu
        cpu["producer"] = time.process_time() - own_cpu  # this process: producing and polling the metrics
        per_sink = {}
        for m in path.sinks():
            appended, commits, commit_s, conflicts, duplicates = path.metric(m, APPENDED, COMMITS, COMMIT_SECONDS, CONFLICTS, DUPLICATES)
            per_sink[m.name] = {"rows": int(appended), "commits": int(commits), "commit_seconds": commit_s,
                                "conflicts": int(conflicts), "duplicates": int(duplicates)}
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        spies = []
        rows, distinct = table_rows(path.table)
        if rows != data.expected_accepted or distinct != rows:
            raise AssertionError(f"Delta holds {rows} rows ({distinct} distinct post_ids), expected {data.expected_accepted} once each")
    finally:
        for spy in spies:
            spy.kill()
        path.stop()
    commits = sum(s["commits"] for s in per_sink.values())
    return {
        "sinks": sinks, "partitions": partitions, "posts": len(data.posts), "rows": rows, "seconds": seconds, "rate": rows / seconds,
        "produced_seconds": produced, "ingest_done_seconds": ingest_done, "cpu_seconds": cpu, "cores": os.cpu_count() or 1,
        "per_sink": per_sink, "commits": commits, "mean_commit_seconds": sum(s["commit_seconds"] for s in per_sink.values()) / max(commits, 1),
        "conflicts": sum(s["conflicts"] for s in per_sink.values()), "sink_env": sink_env, "load": os.getloadavg()[0],
    }


def table_rows(table: Path) -> tuple[int, int]:
    """(rows, distinct post_ids) of the Delta table."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    ids = DeltaTable(str(table)).to_pyarrow_dataset().to_table(columns=["post_id"]).column("post_id")
    return len(ids), len(pc.unique(ids))


def run(bootstrap: str, data: Dataset, work: Path, repeat: int = 2, sinks: tuple[int, ...] = SINKS, partitions: int = PARTITIONS,
        sink_env: dict[str, str] | None = None, profile: Path | None = None) -> dict:
    """Runs of 1 and 2 sinks alternated `repeat` times on the same data; the fastest of each size."""
    runs: dict[int, list[dict]] = {n: [] for n in sinks}
    for r in range(max(1, repeat)):
        for n in sinks:
            result = one_run(bootstrap, data, work / f"sinks{n}-{r}", f"sinks{n}r{r}-", n, partitions, dict(sink_env or {}),
                             profile / f"run{r}" if profile is not None and r == 0 else None)
            print(f"    {n} sink(s), run {r}: {summary(result)}", flush=True)
            runs[n].append(result)
            shutil.rmtree(work / f"sinks{n}-{r}" / "training", ignore_errors=True)
    best = {n: max(rs, key=lambda x: x["rate"]) for n, rs in runs.items()}
    out: dict = {"best": {str(n): b for n, b in best.items()}, "runs": {str(n): [round(x["rate"]) for x in rs] for n, rs in runs.items()}}
    if 1 in best and 2 in best:
        out["ratio"] = best[2]["rate"] / best[1]["rate"]
    out["rate"] = best[max(best)]["rate"]
    return out


def summary(r: dict) -> str:
    cpu = r["cpu_seconds"]
    wall = r["seconds"]
    sinks_cpu = sum(v for k, v in cpu.items() if k.startswith("sink"))
    busy = sum(cpu.values()) / (r["cores"] * wall)
    ingest_done = f"ingest done at {r['ingest_done_seconds']:.2f} s" if r.get("ingest_done_seconds") is not None else "ingest done ?"
    return (f"{r['rate']:,.0f} rows/s ({r['rows']:,} rows in {wall:.2f} s; posts produced in {r['produced_seconds']:.2f} s, {ingest_done}); "
            f"CPU-s ingest {cpu.get('ingest', 0):.1f}, sinks {sinks_cpu:.1f} ({', '.join(f'{cpu[k]:.1f}' for k in sorted(cpu) if k.startswith('sink'))}), "
            f"broker {cpu.get('broker', 0):.1f}, producer {cpu.get('producer', 0):.1f} = {busy:.0%} of {r['cores']} cores; "
            f"sinks' CPU {sink_cpu_us(r):.0f} µs per row; {r['commits']} commits, mean {r['mean_commit_seconds']:.2f} s, {r['conflicts']} overtaken"
            + (f"; load average {r['load']:.1f}" if "load" in r else ""))


def ceiling(r: dict) -> tuple[float, str]:
    """(rows/s, what bounds it) on this machine's cores were they idle, from the run's CPU per row:
    no process past one core (the sinks' and ingest's work is one Python thread each; Delta's
    Rust threads are counted in their CPU), all of the path within the cores. The producer (this
    process, standing in for upstream) is not part of the path."""
    per_row = {name: seconds / max(r["rows"], 1) for name, seconds in r["cpu_seconds"].items() if name != "producer" and seconds > 0}
    busiest = max(per_row, key=lambda name: per_row[name])
    one_core = 1 / per_row[busiest]
    all_cores = r["cores"] / sum(per_row.values())
    return (one_core, f"{busiest}'s core") if one_core < all_cores else (all_cores, f"the {r['cores']} cores")


def sink_cpu_us(r: dict) -> float:
    """The sinks' CPU (all of them) per row stored, in µs: what the machine's other load inflates least."""
    return sum(v for k, v in r["cpu_seconds"].items() if k.startswith("sink")) / max(r["rows"], 1) * 1e6


def rows(results: dict) -> list[tuple[str, str, str, str]]:
    """The table rows of step `sinks` (bench/__main__.py adds them after row 3b)."""
    r = results.get("sinks")
    if r is None:
        return []
    if "error" in r or "skipped" in r:
        return [("3c. Full path, 2 sinks vs 1", " ".join(str(r.get("error") or r.get("skipped")).split())[:300], "", "**failed**" if "error" in r else "—")]
    out = []
    for n, best in sorted(r["best"].items()):
        runs = r["runs"].get(n, [])
        note = f"; best of {len(runs)} runs: {', '.join(f'{x:,}' for x in runs)}" if len(runs) > 1 else ""
        out.append((f"3c. Full path: ingest + {n} sink{'s' if n != '1' else ''} into one Delta table ({best['partitions']} partitions)",
                    summary(best) + note, "", "—"))
    if "ratio" in r:
        one, two = r["best"]["1"], r["best"]["2"]
        cpu, allowed = "", None
        if "cpu_seconds" in one:
            (c1, b1), (c2, b2) = ceiling(one), ceiling(two)
            cpu = (f"; sinks' CPU per row {sink_cpu_us(one):.0f} µs with 1, {sink_cpu_us(two):.0f} µs with 2; by the CPU each run took, on {one['cores']} "
                   f"idle cores: 1 sink {c1:,.0f} rows/s (bound by {b1}), 2 sinks {c2:,.0f} rows/s (bound by {b2}) = {c2 / c1:.2f}×")
            allowed = c2 / c1
        # Met only if the CPU the runs took allows it too: on a machine busy with other work two
        # processes get twice one's share of the cores, which flatters two sinks by wall clock.
        met = r["ratio"] >= TARGET and (allowed is None or allowed >= TARGET)
        out.append(("3c. Full path, 2 sinks vs 1 (same run)", f"{r['ratio']:.2f}× by rows/s{cpu}", f"≥ {TARGET}× (or the profile of what bounds it)",
                    "met" if met else "**missed**"))
    return out


def with_rows(table: str, results: dict) -> str:
    """`table` (bench/report.py's) with the rows of this step after row 3b (else before the end)."""
    extra = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows(results)]
    if not extra:
        return table
    lines = table.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("| 3b.")), None)
    if at is None:
        at = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
    return "\n".join(lines[:at] + extra + lines[at:])


def main(argv: list[str] | None = None) -> int:
    from consentry_cli.broker import EmbeddedBroker

    parser = argparse.ArgumentParser(prog="python -m bench.two_sinks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=400_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--sinks", default=",".join(map(str, SINKS)), help="sink counts, comma-separated (default 1,2)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--flush-seconds", type=float, help="CONSENTRY_SINK_FLUSH_SECONDS of the sinks (default theirs: 1.0)")
    parser.add_argument("--batch-rows", type=int, help="CONSENTRY_SINK_BATCH_ROWS of the sinks (default theirs: 200,000)")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of ingest and each sink (first run of each size) here")
    args = parser.parse_args(argv)
    sink_env = {}
    if args.flush_seconds is not None:
        sink_env["CONSENTRY_SINK_FLUSH_SECONDS"] = str(args.flush_seconds)
    if args.batch_rows is not None:
        sink_env["CONSENTRY_SINK_BATCH_ROWS"] = str(args.batch_rows)
    work = Path(tempfile.mkdtemp(prefix="consentry-two-sinks-"))
    broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
    broker.start()
    try:
        data = make_dataset(args.posts, args.users)
        result = run(broker.bootstrap, data, work, args.repeat, tuple(int(n) for n in args.sinks.split(",")), args.partitions, sink_env, args.profile)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows({"sinks": result}):
        print(" | ".join(row))
    emit({k: v for k, v in result.items() if k != "best"} | {"load": os.getloadavg()[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
