"""Scale-out (issue 16): the same workload on 32 partitions with 1, 2 and 4 ingest workers and
1 and 2 consent workers, each a process (`python -m consentry_cli ingest|consent`).

    python -m bench.scale [--posts 200000] [--events 60000] [--partitions 32] [--no-rebalance]
    python -m bench --scale       (the same, after the steps of `--only`)

For each fleet: the CPU-seconds its processes spent (user + system, from the first post or
event handed to them until the last one is handled) per million posts or events. On 2 cores
wall-clock cannot grow with more workers; the cost per post staying flat is linear scale-out.

The rebalance pause: 2 ingest workers under a steady load (bench/loadgen.py), a third joins,
later one leaves (SIGTERM); the longest time no post was handled after each, i.e. from the
group's rebalance stopping the flow to posts flowing again, and the time from the event to
then. The ingest view's bytes per user: tracemalloc around loading ingest's ConsentView from
the consent table's changelog (every user notified, 10 % objected), as ingest keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import psutil

from bench.common import ROOT, commit_to_end, emit, free_port, make_dataset, produce, wait_ready
from bench.system import SECRET
from consentry.domain.model import ObjectionEvent
from consentry.kafka import ensure_topics
from consentry.partitioning import home_partition
from consentry.scrape import parse_metrics, total
from consentry.settings import CommonSettings
from consentry.timeutil import now_us
from consentry.wire import encode_notice, encode_objection

PARTITIONS = 32
INGEST_FLEETS = (1, 2, 4)
CONSENT_FLEETS = (1, 2)
POSTS_IN = "consentry_ingest_posts_in_total"
OBJECTIONS_APPLIED = "consentry_consent_objections_total"
# A scrape of a worker's /metrics costs it milliseconds of CPU, counted in the fleet's CPU:
# polled every 50 ms it was most of a consent worker's CPU at 10,000 events (79-105 events/s).
POLL_S = 0.5


class Fleet:
    """`count` processes of one service under one topic prefix, each with its port and data dir."""

    def __init__(self, bootstrap: str, prefix: str, root: Path, partitions: int) -> None:
        self.bootstrap, self.prefix, self.root, self.partitions = bootstrap, prefix, root, partitions
        self.settings = CommonSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions, broker_flavor="tansu")
        self.topics = self.settings.topics
        self.members: list[tuple[str, subprocess.Popen[bytes], int]] = []  # (service, process, port)
        root.mkdir(parents=True, exist_ok=True)

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.settings))

    def start(self, service: str) -> tuple[subprocess.Popen[bytes], int]:
        n = len(self.members)
        port = free_port()
        env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "CONSENTRY_BROKER_FLAVOR": "tansu",
            "CONSENTRY_TOPIC_PREFIX": self.prefix, "CONSENTRY_PARTITIONS": str(self.partitions),
            "CONSENTRY_DATA_DIR": str(self.root / f"var{n}"), "CONSENTRY_JWT_SECRET": SECRET,
            f"CONSENTRY_{service.upper()}_PORT": str(port),
        }
        if service == "consent":
            env["CONSENTRY_CONSENT_URL"] = f"http://127.0.0.1:{port}"
        log = open(self.root / f"{service}{n}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "consentry_cli", service], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.members.append((service, process, port))
        return process, port

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for service, process, port in self.members:
            wait_ready(process, f"http://127.0.0.1:{port}", service, deadline, lambda: f"(logs in {self.root})")

    def live(self) -> list[tuple[str, subprocess.Popen[bytes], int]]:
        return [m for m in self.members if m[1].poll() is None]

    def counter(self, name: str) -> float:
        """`name` summed over the live members (a member that does not answer counts 0)."""
        out = 0.0
        for _, _, port in self.live():
            try:
                out += total(parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text), name)
            except httpx.HTTPError:
                pass
        return out

    def cpu_seconds(self) -> float:
        out = 0.0
        for _, process, _ in self.live():
            try:
                p = psutil.Process(process.pid)
                for q in (p, *p.children(recursive=True)):
                    times = q.cpu_times()
                    out += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return out

    def stop_one(self, index: int) -> None:
        _, process, _ = self.members[index]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)

    def stop(self) -> None:
        for _, process, _ in self.members:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process, _ in self.members:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _seed_consent(fleet: Fleet, data) -> None:  # type: ignore[no-untyped-def]
    """The consent table as the consent service leaves it once every notice and objection was
    applied (as bench/throughput.py seeds it), on `fleet.partitions` partitions."""
    bootstrap, topics, n = fleet.bootstrap, fleet.topics, fleet.partitions
    asyncio.run(produce(bootstrap, topics.notices, [(x.user_id.encode(), encode_notice(x)) for x in data.notices], partitions=n))
    asyncio.run(produce(bootstrap, topics.objections, [(e.user_id.encode(), encode_objection(e)) for e in data.objections], partitions=n))
    asyncio.run(produce(bootstrap, topics.consent_state, data.consent_changelog(), partitions=n))
    asyncio.run(commit_to_end(bootstrap, topics.group("consent"), [topics.objections, topics.receipts, topics.notices], partitions=n))


def _until(fleet: Fleet, name: str, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while fleet.counter(name) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} below {expected} after {timeout}s (logs in {fleet.root})")
        if len(fleet.live()) < len(fleet.members):
            raise RuntimeError(f"a worker exited (logs in {fleet.root})")
        time.sleep(POLL_S)
    return time.perf_counter()


def ingest_fleet(bootstrap: str, work: Path, workers: int, data, partitions: int) -> dict:  # type: ignore[no-untyped-def]
    fleet = Fleet(bootstrap, f"scale-i{workers}-", work / f"ingest{workers}", partitions)
    try:
        fleet.create_topics()
        _seed_consent(fleet, data)
        for _ in range(workers):
            fleet.start("ingest")
        fleet.wait_ready()
        cpu0, started = fleet.cpu_seconds(), time.perf_counter()
        asyncio.run(produce(bootstrap, fleet.topics.posts, data.posts, partitions=partitions))
        finished = _until(fleet, POSTS_IN, len(data.posts), timeout=600)
        cpu = fleet.cpu_seconds() - cpu0
    finally:
        fleet.stop()
    posts = len(data.posts)
    return {"workers": workers, "posts": posts, "cpu_seconds": cpu, "cpu_s_per_million": cpu / posts * 1e6,
            "seconds": finished - started, "rate": posts / (finished - started)}


def consent_fleet(bootstrap: str, work: Path, workers: int, events: int, partitions: int) -> dict:
    fleet = Fleet(bootstrap, f"scale-c{workers}-", work / f"consent{workers}", partitions)
    at = now_us() - 86_400_000_000
    messages = []
    for i in range(events):
        user = f"scale-user-{i:08d}"
        messages.append((user.encode(), encode_objection(ObjectionEvent(f"obj-{user}", user, "object", at, "import"))))
    try:
        fleet.create_topics()
        for _ in range(workers):
            fleet.start("consent")
        fleet.wait_ready()
        cpu0, started = fleet.cpu_seconds(), time.perf_counter()
        asyncio.run(produce(bootstrap, fleet.topics.objections, messages, partitions=partitions))
        finished = _until(fleet, OBJECTIONS_APPLIED, events, timeout=900)
        cpu = fleet.cpu_seconds() - cpu0
    finally:
        fleet.stop()
    return {"workers": workers, "events": events, "cpu_seconds": cpu, "cpu_s_per_million": cpu / events * 1e6,
            "seconds": finished - started, "rate": events / (finished - started)}


class FlowWatch(threading.Thread):
    """Samples the fleet's posts-handled total; `stall_after(t)` is the longest time without
    progress in the window after t, and when posts flowed again."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.fleet = fleet
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), self.fleet.counter(POSTS_IN)))
            time.sleep(0.02)

    def stall_after(self, event_at: float, window: float) -> tuple[float, float]:
        """(longest gap between two increases of the total within [event_at, event_at + window],
        seconds from the event until the increase that ended it)."""
        end = event_at + window
        changes = [t for (t, v), (_, before) in zip(self.samples[1:], self.samples) if v > before and event_at <= t <= end]
        points = [event_at, *changes]
        gaps = [(b - a, b) for a, b in zip(points, points[1:])]
        tail = min(end, self.samples[-1][0]) - points[-1]  # not flowing again by the end of the window
        if not gaps or tail > max(gaps)[0]:
            return tail, float("inf")
        gap, resumed = max(gaps)
        return gap, resumed - event_at


def rebalance(bootstrap: str, work: Path, data, partitions: int, rate: int = 2_000) -> dict:  # type: ignore[no-untyped-def]
    fleet = Fleet(bootstrap, "scale-rb-", work / "rebalance", partitions)
    window = 45.0  # the joiner's start-up, the rebalance and the reload of the homes it takes
    try:
        fleet.create_topics()
        _seed_consent(fleet, data)
        fleet.start("ingest")
        fleet.start("ingest")
        fleet.wait_ready()
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", bootstrap, fleet.topics.posts, str(rate), str(5 + 2 * window + 5), str(len(data.users)), str(partitions)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(fleet.root / "loadgen.log", "ab"),
        )
        watch = FlowWatch(fleet)
        watch.start()
        try:
            time.sleep(5)  # steady flow first (a measurement's schedule, not a synchronisation)
            joined_at = time.monotonic()
            fleet.start("ingest")
            fleet.wait_ready()
            ready_after = time.monotonic() - joined_at
            time.sleep(max(0.0, joined_at + window - time.monotonic()))
            left_at = time.monotonic()
            fleet.stop_one(0)
            time.sleep(window)
        finally:
            watch.stopping.set()
            watch.join()
            load.terminate()
            load.wait(30)
    finally:
        fleet.stop()
    join_gap, join_resumed = watch.stall_after(joined_at, window)
    leave_gap, leave_resumed = watch.stall_after(left_at, window)
    return {"rate": rate, "join_stall_s": join_gap, "join_resumed_after_s": join_resumed, "joiner_ready_after_s": ready_after,
            "leave_stall_s": leave_gap, "leave_resumed_after_s": leave_resumed}


def view_bytes_per_user(data) -> dict:  # type: ignore[no-untyped-def]
    from services.ingest.consent_view import ConsentView

    changelog = data.consent_changelog()
    view = ConsentView()
    view.reset(set(range(PARTITIONS)))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for key, value in changelog:
        view.apply(home_partition(key.decode(), PARTITIONS), key, value)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    users = view.user_count()
    return {"users": users, "bytes_per_user": (after - before) / users,
            "changelog_bytes_per_user": sum(len(k) + len(v) for k, v in changelog) / len(changelog)}


def run(bootstrap: str, work: Path, posts: int = 200_000, users: int = 20_000, events: int = 60_000,
        partitions: int = PARTITIONS, with_rebalance: bool = True) -> dict:
    data = make_dataset(posts, users)
    out: dict = {"partitions": partitions, "view": view_bytes_per_user(data)}
    for n in INGEST_FLEETS:
        out[f"ingest{n}"] = ingest_fleet(bootstrap, work, n, data, partitions)
        print(f"    ingest x{n}: {out[f'ingest{n}']}", flush=True)
    for n in CONSENT_FLEETS:
        out[f"consent{n}"] = consent_fleet(bootstrap, work, n, events, partitions)
        print(f"    consent x{n}: {out[f'consent{n}']}", flush=True)
    if with_rebalance:
        out["rebalance"] = rebalance(bootstrap, work, data, partitions)
        print(f"    rebalance: {out['rebalance']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=60_000, help="objection events for the consent fleets")
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--no-rebalance", action="store_true")
    parser.add_argument("--rebalance-only", action="store_true")
    args = parser.parse_args(argv)
    from bench import report
    from consentry_cli.broker import EmbeddedBroker

    work = Path(tempfile.mkdtemp(prefix="consentry-scale-"))
    broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
    broker.start()
    try:
        if args.rebalance_only:
            data = make_dataset(args.posts, args.users)
            result = {"partitions": args.partitions, "rebalance": rebalance(broker.bootstrap, work, data, args.partitions)}
        else:
            result = run(broker.bootstrap, work, args.posts, args.users, args.events, args.partitions, not args.no_rebalance)
    finally:
        broker.stop()
    print(report.scale_table(result))
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
