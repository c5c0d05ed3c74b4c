"""Micro-benchmark: `consentry import` of 1,000,000 historical objections.

    python -m bench.import_bench [--lines 1000000] [--partitions 8]

Generates a JSON Lines file of objection events (a few bad lines and duplicates among
them), starts the embedded broker on a free port (or uses KAFKA_BOOTSTRAP_SERVERS), runs
the same code path as `consentry import FILE`, checks that every accepted event is on the
`objections` topic, and prints lines per second. The target: 1M lines in under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import TopicPartition  # noqa: E402

from consentry import patches  # noqa: E402
from consentry.importer import import_file  # noqa: E402
from consentry.kafka import ensure_topics  # noqa: E402
from consentry.settings import CommonSettings  # noqa: E402
from consentry.timeutil import format_rfc3339, now_us  # noqa: E402

TARGET_SECONDS = 60.0


def generate(path: Path, lines: int, users: int) -> tuple[int, int, int]:
    """Write `lines` lines; returns (expected accepted, duplicates, rejected)."""
    start = now_us() - 3 * 365 * 24 * 3600 * 1_000_000
    accepted = duplicates = rejected = 0
    previous = ""
    with open(path, "w") as out:
        for n in range(lines):
            if n % 10_000 == 9_999:
                out.write('{"objection_id": "broken",\n')
                rejected += 1
                continue
            if n % 10_000 == 5_000 and previous:
                out.write(previous)
                duplicates += 1
                continue
            user = f"user-{n % users:07d}"
            kind = "withdraw" if n % 50 == 49 else "object"
            previous = (
                f'{{"objection_id": "hist-{n:08d}", "user_id": "{user}", "kind": "{kind}", '
                f'"received_at": "{format_rfc3339(start + n * 1000)}", "channel": "email", "reason": "from the old system"}}\n'
            )
            out.write(previous)
            accepted += 1
    return accepted, duplicates, rejected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def count_on_topic(settings: CommonSettings) -> int:
    tps = [TopicPartition(settings.topics.objections, p) for p in range(settings.partitions)]
    return sum((await patches.true_end_offsets(settings.bootstrap_servers, tps)).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=400_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "Unable connect" while the broker starts

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    with tempfile.TemporaryDirectory(prefix="consentry-import-bench-") as tmp:
        if not external:
            from consentry_cli.broker import EmbeddedBroker

            broker = EmbeddedBroker(free_port(), log_path=Path(tmp) / "broker.log")
            broker.start()
        try:
            settings = CommonSettings(
                kafka_bootstrap_servers=external or broker.bootstrap,  # type: ignore[union-attr]
                broker_flavor="kafka" if external else "tansu",
                topic_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
                partitions=args.partitions,
            )
            asyncio.run(ensure_topics(settings))
            path = Path(tmp) / "objections.jsonl"
            expected, duplicates, rejected = generate(path, args.lines, args.users)
            size_mib = path.stat().st_size / (1 << 20)
            started = time.perf_counter()
            report = asyncio.run(import_file(settings, path, now_us()))
            elapsed = time.perf_counter() - started
            on_topic = asyncio.run(count_on_topic(settings))
        finally:
            if broker is not None:
                broker.stop()
    ok = (report.accepted, report.duplicates, report.rejected_count) == (expected, duplicates, rejected) and on_topic == expected
    print(
        f"import: {report.lines:,} lines ({size_mib:.0f} MiB) in {elapsed:.1f} s = {report.lines / elapsed:,.0f} lines/s; "
        f"accepted {report.accepted:,}, duplicates {report.duplicates:,}, rejected {report.rejected_count:,}; "
        f"{on_topic:,} events on the topic ({'broker: ' + ('kafka' if external else 'embedded Tansu')})"
    )
    if not ok:
        print(f"MISMATCH: expected accepted={expected} duplicates={duplicates} rejected={rejected}", file=sys.stderr)
        sys.exit(1)
    if args.lines >= 1_000_000 and elapsed > TARGET_SECONDS:
        print(f"SLOW: over the {TARGET_SECONDS:.0f} s target for 1M lines", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
