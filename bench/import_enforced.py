"""11. Import to enforced: N historical objections imported with `consentry import`, the whole
system running, until every one of them is `enforced` (and `purged`) in the consent table.

    python -m bench.import_enforced [--imports 50000]

Set-up, not timed: fresh topics; N users, each notified long ago (a notice on `notices` and
the user's row on the consent changelog, the consent group's offsets at the end of its
sources: the platform told its users before the import, as in production); `consentry
consent`, `ingest` and `sink` started and ready; the import file written (one objection per
user, `received_at` a year ago, channel `email`).

Timed from the start of `consentry import FILE` (the real command, its own process, as an
operator runs it) to the moment the last imported objection is `enforced`; also to the last
one applied by the consent service and the last one `purged`.

How it is observed: this process reads the consent table's changelog (`consentry.consent-
state`) from its end offsets taken before the import, round after round, each round up to
the end offsets of that moment (`consentry.kafka.records_until`), until every imported
objection is stamped `purged`. A changelog record is the consent service's own row of the
user (what `GET /v1/user/status` answers), so an objection is applied at the first record of
its user holding its id, enforced at the first whose entry has `enforced_at`, purged at the
first with `purged_at`. The moment is the record's timestamp (the consent worker's producer
stamps it when the row is written), so the reader's own delay does not count. The reader
parses ~3 small JSON records per objection (a few µs each, against the consent service's
several hundred µs per event): it does not slow the system it watches.

Nothing is posted: the training store is empty, so each purge marker's Delta delete finds no
row (what a purge costs on a large table is row 6). The rate is bound by the consent service,
which applies three events per objection (the objection, `enforced`, `purged`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import PARTITIONS, ROOT, commit_to_end, produce, user_state
from bench.memory import _messages
from bench.system import Services
from consentry.domain.model import Notice
from consentry.kafka import records_until
from consentry.patches import true_end_offsets
from consentry.timeutil import format_rfc3339, now_us
from consentry.wire import encode_notice

EVENTS_PER_OBJECTION = 3  # the objection, ingest's `enforced` receipt, the sink's `purged` receipt
TARGET_IMPORTS = 1_000_000
TARGET_SECONDS = 180.0  # issue 16: 1M imported objections enforced in < 3 minutes
YEAR_US = 365 * 86_400_000_000


@dataclass
class Stamps:
    """When each imported objection first showed as applied, enforced and purged on the consent
    changelog: {user key: record timestamp in ms}. Pure: records are handed in."""

    objection_of: dict[bytes, str]  # the user's key -> the id of their imported objection
    applied: dict[bytes, int] = field(default_factory=dict)
    enforced: dict[bytes, int] = field(default_factory=dict)
    purged: dict[bytes, int] = field(default_factory=dict)

    def see(self, key: bytes | None, value: bytes | None, timestamp_ms: int) -> None:
        objection_id = self.objection_of.get(key) if key is not None else None
        if objection_id is None or value is None or key in self.purged:
            return
        for entry in orjson.loads(value).get("history", ()):
            if entry.get("objection_id") == objection_id:
                self.applied.setdefault(key, timestamp_ms)  # type: ignore[arg-type]
                if entry.get("enforced_at") is not None:
                    self.enforced.setdefault(key, timestamp_ms)  # type: ignore[arg-type]
                if entry.get("purged_at") is not None:
                    self.purged.setdefault(key, timestamp_ms)  # type: ignore[arg-type]
                return

    @property
    def done(self) -> bool:
        return len(self.purged) == len(self.objection_of)

    def seconds_after(self, started_ms: float) -> dict[str, float | None]:
        """Seconds from `started_ms` (wall clock) until the last objection reached each step;
        None while some have not reached it."""
        n = len(self.objection_of)
        return {
            step: (max(stamps.values()) - started_ms) / 1000 if len(stamps) == n and stamps else None
            for step, stamps in (("applied", self.applied), ("enforced", self.enforced), ("purged", self.purged))
        }


def import_lines(users: int, received_at_us: int) -> bytes:
    """The import file: one historical objection per user, as an operator exports them."""
    at = format_rfc3339(received_at_us)
    return b"".join(
        b'{"objection_id":"imp-%08d","user_id":"user-%08d","kind":"object","received_at":"%s","channel":"email","reason":"from the old system"}\n'
        % (i, i, at.encode())
        for i in range(users)
    )


async def _observe(bootstrap: str, topic: str, starts: dict[TopicPartition, int], stamps: Stamps,
                   importer: subprocess.Popen[bytes], timeout: float) -> float | None:
    """Read the changelog from `starts` until every objection is purged; the import command's
    exit time (monotonic) once seen."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    import_done: float | None = None
    deadline = time.monotonic() + timeout
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        while not stamps.done:
            if import_done is None and importer.poll() is not None:
                import_done = time.monotonic()
                if importer.returncode != 0:
                    raise RuntimeError(f"consentry import exited with {importer.returncode}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"after {timeout:.0f} s: {len(stamps.applied):,} applied, {len(stamps.enforced):,} enforced, "
                    f"{len(stamps.purged):,} purged of {len(stamps.objection_of):,}"
                )
            ends = await true_end_offsets(bootstrap, list(starts))
            read = 0
            async for record in records_until(consumer, ends, remaining, "the consent changelog"):
                stamps.see(record.key, record.value, record.timestamp)
                read += 1
            if not read:
                await asyncio.sleep(0.2)  # nothing new: the next round after a pause, not a busy loop
    finally:
        await consumer.stop()
    return import_done


def run(bootstrap: str, work: Path, imports: int, timeout: float | None = None) -> dict:
    load_start = os.getloadavg()[0]
    told_us = now_us() - 2 * YEAR_US  # every user notified two years ago
    objected_us = now_us() - YEAR_US
    env = {"CONSENTRY_LOG_LEVEL": "WARNING"}
    with Services(bootstrap, f"imp{os.getpid()}-", work / "import-enforced", env) as services:
        services.create_topics()
        topics = services.topics
        notice = lambda u: Notice("notice-" + u, u, "v1", "email", told_us, "FR")  # noqa: E731
        asyncio.run(produce(bootstrap, topics.notices, _messages(imports, lambda u: encode_notice(notice(u))), chunk=50_000))
        asyncio.run(produce(bootstrap, topics.consent_state, _messages(imports, lambda u: user_state(notice(u), None, told_us)), chunk=50_000))
        asyncio.run(commit_to_end(bootstrap, topics.group("consent"), [topics.objections, topics.receipts, topics.notices]))
        services.start("consent", "ingest", "sink", timeout=600)
        path = services.root / "objections.jsonl"
        path.write_bytes(import_lines(imports, objected_us))
        changelog = [TopicPartition(topics.consent_state, p) for p in range(PARTITIONS)]
        starts = asyncio.run(true_end_offsets(bootstrap, changelog))
        stamps = Stamps({b"user-%08d" % i: f"imp-{i:08d}" for i in range(imports)})
        log = open(services.log_dir / "import.log", "ab")
        started_ms = time.time() * 1000
        started = time.monotonic()
        importer = subprocess.Popen([sys.executable, "-m", "consentry_cli", "import", str(path)], cwd=ROOT, env=services.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            import_done = asyncio.run(_observe(bootstrap, topics.consent_state, starts, stamps, importer, timeout or max(600.0, imports / 50)))
            if import_done is None:
                importer.wait(60)
                import_done = time.monotonic()
        finally:
            if importer.poll() is None:
                importer.kill()
                importer.wait()
        observed = time.monotonic() - started
        if importer.returncode != 0:
            raise RuntimeError(f"consentry import exited with {importer.returncode}")
    seconds = stamps.seconds_after(started_ms)
    if any(s is None or s < 0 or s > observed + 2 for s in seconds.values()):  # the records' clock against this one
        raise AssertionError(f"changelog timestamps out of the observed window ({observed:.1f} s): {seconds}")
    return {
        "imports": imports,
        "import_seconds": import_done - started,
        "applied_seconds": seconds["applied"],
        "enforced_seconds": seconds["enforced"],
        "purged_seconds": seconds["purged"],
        "events": EVENTS_PER_OBJECTION * imports,
        "load": [load_start, os.getloadavg()[0]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imports", type=int, default=50_000)
    args = parser.parse_args()
    from bench.common import on_embedded_broker

    on_embedded_broker("consentry-import-enforced-", lambda bootstrap, work: run(bootstrap, work, args.imports))

if __name__ == "__main__":
    main()
