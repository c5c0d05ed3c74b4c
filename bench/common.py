"""What every measurement shares: the data set, topic set-up, producing, and small helpers.

The data set is deterministic (seeded): the same ~200-byte JSON posts keyed by user, the
same 10 % of users objected, for the limit, the peer and Consentry alike.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consentry.domain.consent import apply_notice, apply_objection, apply_receipt
from consentry.domain.model import ENFORCED, PURGED, Notice, ObjectionEvent, Receipt
from consentry.wire import encode_consent_state, encode_notice, encode_objection
from consentry.kafka import BatchSender
from consentry.partitioning import home_partition
from consentry.timeutil import format_rfc3339, now_us

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8
OBJECTED_SHARE = 0.10
TEXT_WORDS = "le la les un une des et ou mais donc car ni que qui quoi dont où the a of to in is it you that he was for on are".split()


@dataclass
class Dataset:
    """Posts as (key, value) bytes in publish order, and who objected."""

    posts: list[tuple[bytes, bytes]]
    users: list[str]
    objected: list[str]
    objected_at_us: int
    expected_accepted: int  # what a correct filter forwards
    mean_bytes: float = 0.0
    objections: list[ObjectionEvent] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # every user was told long ago (notice rule on)

    def consent_changelog(self) -> list[tuple[bytes, bytes]]:
        """The consent table's changelog as the consent service leaves it once every notice and
        objection was applied, enforced and purged: one record per user."""
        objected = {e.user_id: e for e in self.objections}
        return [(n.user_id.encode(), user_state(n, objected.get(n.user_id), self.objected_at_us)) for n in self.notices]


def make_dataset(n_posts: int, n_users: int, seed: int = 6) -> Dataset:
    rng = random.Random(seed)
    users = [f"user-{i:06d}" for i in range(n_users)]
    objected = sorted(rng.sample(users, int(n_users * OBJECTED_SHARE)))
    objected_set = set(objected)
    objected_at = now_us() - 3_600_000_000  # an hour ago: every post below is newer or older, all dropped
    base = objected_at - 40 * 86_400_000_000
    posts: list[tuple[bytes, bytes]] = []
    accepted = 0
    total = 0
    for i in range(n_posts):
        user = users[rng.randrange(n_users)]
        visibility = "public" if rng.random() < 0.95 else rng.choice(("friends", "private"))
        words = " ".join(rng.choice(TEXT_WORDS) for _ in range(10))
        value = orjson.dumps(
            {
                "post_id": f"post-{i:09d}",
                "user_id": user,
                "created_at": format_rfc3339(base + rng.randrange(40 * 86_400_000_000)),
                "visibility": visibility,
                "text": words,
                "lang": "fr",
                "country": "FR",
                "author_is_minor": False,
            }
        )
        total += len(value)
        posts.append((user.encode(), value))
        if visibility == "public" and user not in objected_set:
            accepted += 1
    objections = [
        ObjectionEvent(f"obj-{user}", user, "object", objected_at, "web") for user in objected
    ]
    told = objected_at - 60 * 86_400_000_000  # beyond any notice grace period
    notices = [Notice(f"notice-{user}", user, "v1", "email", told, "FR") for user in users]
    return Dataset(posts, users, objected, objected_at, accepted, total / max(n_posts, 1), objections, notices)


def user_state(notice: Notice | None, objection: ObjectionEvent | None, at_us: int) -> bytes:
    """One user's consent table row, built with the consent service's own domain code."""
    state = apply_notice(None, notice, at_us) if notice is not None else None
    if objection is not None:
        state = apply_objection(state, objection, at_us)
        ids = (objection.objection_id,)
        state = apply_receipt(state, Receipt(ENFORCED, objection.user_id, ids, at_us), at_us)
        state = apply_receipt(state, Receipt(PURGED, objection.user_id, ids, at_us, 0, at_us), at_us)
    return encode_consent_state(state)  # type: ignore[arg-type]


def enforced_state(event: ObjectionEvent, at_us: int) -> bytes:
    """The consent table row of a user whose objection was applied, enforced and purged."""
    return user_state(None, event, at_us)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- kafka


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = PARTITIONS, config: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=dict(config or {"retention.ms": "-1"})) for n in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]], partitions: int = PARTITIONS, chunk: int = 20_000) -> float:
    """Publish keyed messages to their murmur2 partition (as aiokafka and Java do); seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024, max_request_size=4 << 20)
    await producer.start()
    started = time.perf_counter()
    try:
        sender = BatchSender(producer)
        for i, (key, value) in enumerate(messages, start=1):
            sender.append(topic, home_partition(key.decode(), partitions), key, value)
            if i % chunk == 0:
                await sender.send()
        await sender.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def end_offsets(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> int:
    """Total records in `topic`, from fetch high watermarks (Tansu's ListOffsets is wrong)."""
    from consentry.patches import true_end_offsets

    offsets = await true_end_offsets(bootstrap, [TopicPartition(topic, p) for p in range(partitions)])
    return sum(offsets.values())


async def read_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS, timeout: float = 30.0) -> list:
    """Every record of `topic`, up to the fetch high watermarks seen along the way."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        deadline = time.monotonic() + timeout
        done: set[TopicPartition] = set()
        while len(done) < len(tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout}s")
            for items in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(items)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    done.add(tp)
        return records
    finally:
        await consumer.stop()


async def commit_to_end(bootstrap: str, group: str, topics: Sequence[str], partitions: int = PARTITIONS) -> None:
    """Mark `group` as having consumed every record of `topics` (a worker that already applied them)."""
    from consentry.patches import true_end_offsets

    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    ends = await true_end_offsets(bootstrap, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit({tp: off for tp, off in ends.items() if off > 0})
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- processes


def run_child(args: list[str], env: dict[str, str] | None = None, timeout: float = 600, python: str | None = None, log: Path | None = None) -> dict:
    """Run a measurement in its own process; its last stdout line is a JSON object."""
    command = [python or sys.executable, *args]
    out = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=open(log, "ab") if log else None, timeout=timeout, text=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed with {out.returncode}: {out.stdout[-2000:]}")
    return orjson.loads(lines[-1])


def wait_ready(process: subprocess.Popen, url: str, name: str, deadline: float, log_tail=lambda: "") -> float:  # type: ignore[type-arg]
    """Poll `url`/readyz until it answers 200 (returns the seconds waited); raises if the process
    exits first (with `log_tail()`, the end of its log) or at `deadline` (time.monotonic())."""
    import httpx

    started = time.monotonic()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log_tail()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{name} not ready before the deadline: {log_tail()}")


def on_embedded_broker(prefix: str, measure) -> None:  # type: ignore[no-untyped-def]
    """A bench module run alone: `measure(bootstrap, work)` on its own embedded broker and
    temporary directory, its result printed; both removed at the end, SIGTERM included
    (`timeout`, kill), so the services it started stop too."""
    import shutil
    import signal
    import tempfile

    from consentry_cli.broker import EmbeddedBroker

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
    broker.start()
    try:
        print(measure(broker.bootstrap, work), flush=True)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


def rss_mib(pid: int, children: bool = False) -> float:
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    if children:
        total += sum(c.memory_info().rss for c in process.children(recursive=True))
    return total / (1 << 20)


def emit(result: dict) -> None:
    """A child's answer to the orchestrator: one JSON line on stdout."""
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)
