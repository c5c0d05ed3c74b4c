"""8. The consent service's rate against its limit: a faust agent doing nothing.

    python -m bench.consent_rate [--users 100000] [--repeat 2] [--partitions 8]

One set of events, like production's mix (every user a notice; 10 % of them an objection
and its two receipts, `enforced` and `purged`), keyed by user on the user's home partition,
is published to `objections`, `notices` and `receipts`. Then, each in its own process and
one after the other, over the same topics and partitions:

- the limit: a faust agent (same faust, same patches, same broker workarounds) that only
  iterates `stream.events()` over the raw values of the three topics;
- the consent service's app (`services.consent.app.create_app`, RocksDB table, changelog),
  applying every event.

Each is timed from its first event taken to its last event acknowledged (for the consent
service: after the event's row was written, the changelog record handed to the producer);
start-up and table recovery are not counted. Runs alternate, the faster of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import orjson

from bench.common import PARTITIONS, produce, run, run_child
from bench.system import Services

NOTICE_AT = 1_700_000_000_000_000


def events(users: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """{topic kind: [(key, value)]}: a notice for every user, an objection and its receipts for every tenth."""
    from consentry.domain.model import ENFORCED, PURGED, Notice, ObjectionEvent, Receipt
    from consentry.wire import encode_notice, encode_objection, encode_receipt

    out: dict[str, list[tuple[bytes, bytes]]] = {"notices": [], "objections": [], "receipts": []}
    for n in range(users):
        user = f"user-{n:08d}"
        key = user.encode()
        out["notices"].append((key, encode_notice(Notice(f"n-{n}", user, "2026-01", "email", NOTICE_AT + n, "DE"))))
        if n % 10 == 0:
            oid = f"o-{n}"
            at = NOTICE_AT + 86_400_000_000 + n
            out["objections"].append((key, encode_objection(ObjectionEvent(oid, user, "object", at, "web", "no"))))
            out["receipts"].append((key, encode_receipt(Receipt(ENFORCED, user, (oid,), at + 50_000))))
            out["receipts"].append((key, encode_receipt(Receipt(PURGED, user, (oid,), at + 4_000_000, 1, at + 50_000))))
    return out


def measure(bootstrap: str, work: Path, users: int, repeat: int = 2, partitions: int = PARTITIONS) -> dict:
    data = events(users)
    total = sum(len(v) for v in data.values())
    limit_runs, consent_runs = [], []
    for attempt in range(repeat):
        prefix = f"rate{attempt}-{uuid.uuid4().hex[:6]}-"
        with Services(bootstrap, prefix, work / f"rate{attempt}", partitions=partitions) as services:
            services.create_topics()
            topics = services.topics
            for kind, messages in data.items():
                run(produce(bootstrap, getattr(topics, kind), messages, partitions=partitions))
            env = {k: v for k, v in services.env.items() if k.startswith(("CONSENTRY_", "KAFKA_"))}
            env["CONSENTRY_LOG_LEVEL"] = "WARNING"
            log = services.log_dir / "rate.log"
            limit_runs.append(run_child(["-m", "bench.consent_rate", "--worker", "limit", "--events", str(total)], env, log=log))
            consent_runs.append(run_child(["-m", "bench.consent_rate", "--worker", "consent", "--events", str(total)], env, log=log))
    limit = max(limit_runs, key=lambda r: r["rate"])
    consent = max(consent_runs, key=lambda r: r["rate"])
    return {
        "events": total, "users": users, "partitions": partitions,
        "limit_rate": limit["rate"], "limit_seconds": limit["seconds"], "limit_runs": [round(r["rate"]) for r in limit_runs],
        "rate": consent["rate"], "seconds": consent["seconds"], "runs": [round(r["rate"]) for r in consent_runs],
        "ratio": consent["rate"] / limit["rate"],
        # CPU per event: less sensitive to other work on the machine than the rates
        "limit_cpu_us": limit["cpu_us_per_event"], "cpu_us": consent["cpu_us_per_event"],
        "cpu_ratio": limit["cpu_us_per_event"] / consent["cpu_us_per_event"],
    }


# ----------------------------------------------------------------------------- the workers


class Clock:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.done = asyncio.Event()

    def taken(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()

    def finished(self, n: int) -> None:
        self.count += n
        if self.count >= self.expected and self.last is None:
            self.last = time.perf_counter()
            self.cpu = time.process_time() - self.first_cpu
            self.done.set()


def worker(mode: str, expected: int) -> None:
    import faust

    from consentry import patches
    from services.consent.settings import ConsentSettings

    settings = ConsentSettings()
    clock = Clock(expected)
    if mode == "limit":
        patches.install_faust_patches(settings)
        (settings.state_dir.parent / "limit").mkdir(parents=True, exist_ok=True)
        app = faust.App(
            f"{settings.topics.group('bench-limit')}-{uuid.uuid4().hex[:6]}", broker=settings.faust_broker, store="memory://",
            topic_partitions=settings.partitions, processing_guarantee="at_least_once", consumer_auto_offset_reset="earliest",
            web_enabled=False, datadir=str(settings.state_dir.parent / "limit"),
        )
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        topics = settings.topics
        source = app.topic(topics.objections, topics.receipts, topics.notices, **raw)

        @app.agent(source)
        async def do_nothing(stream):  # type: ignore[no-untyped-def]
            async for _event in stream.events():
                clock.taken()
                clock.finished(1)
    else:
        from services.consent.app import create_app

        app = create_app(settings)
        # Counted by faust's own sensor calls: an event in, and an event out (acknowledged,
        # after the agent applied it and wrote its row).
        monitor = app.monitor
        event_in, event_out = monitor.on_stream_event_in, monitor.on_stream_event_out

        def counted_in(*args, **kwargs):  # type: ignore[no-untyped-def]
            clock.taken()
            return event_in(*args, **kwargs)

        def counted_out(*args, **kwargs):  # type: ignore[no-untyped-def]
            result = event_out(*args, **kwargs)
            clock.finished(1)
            return result

        monitor.on_stream_event_in, monitor.on_stream_event_out = counted_in, counted_out

    profile_path = os.environ.get("BENCH_CPROFILE")
    profiler = None
    if profile_path:
        import cProfile

        # BENCH_CPROFILE_CPU=1: the main thread's CPU time instead of wall-clock (the machine's
        # other work then shows less; the consumer thread is not profiled either way).
        profiler = cProfile.Profile(time.thread_time) if os.environ.get("BENCH_CPROFILE_CPU") else cProfile.Profile()
        profiler.enable()

    @app.task
    async def report() -> None:
        await clock.done.wait()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile_path}.{mode}")
        seconds = (clock.last or 0) - (clock.first or 0)
        result = {"mode": mode, "events": clock.count, "seconds": seconds, "rate": clock.count / seconds,
                  "cpu_us_per_event": clock.cpu / clock.count * 1e6}
        os.write(1, orjson.dumps(result) + b"\n")  # faust redirects sys.stdout to its log
        os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("limit", "consent"))
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=PARTITIONS, help="of the three source topics and the changelog")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.events)
        return
    import tempfile

    from bench.common import free_port
    from consentry_cli.broker import EmbeddedBroker

    work = Path(tempfile.mkdtemp(prefix="consentry-rate-"))
    broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
    broker.start()
    try:
        print(measure(broker.bootstrap, work, args.users, args.repeat, args.partitions), flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
