"""`consentry dead-letters`: the events the consent service could not apply
(`consentry.consent-dead-letters`), and each event whole, fetched from where it was read, to fix
and re-drive (docs/operations.md, "ConsentryDeadLetters")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from consentry.kafka import client_options, records_until
from consentry.patches import true_end_offsets
from consentry.settings import CommonSettings


@dataclass(frozen=True)
class DeadLetter:
    topic: str  # where the event was read
    partition: int
    offset: int
    reason: str
    received_at: str
    key: bytes | None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def _consumer(settings: CommonSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, fetch_max_wait_ms=50, client_id="consentry-dead-letters"
    )


async def read_dead_letters(settings: CommonSettings, timeout: float = 30.0) -> list[DeadLetter]:
    """Every dead letter, oldest first within each partition."""
    topic = settings.topics.consent_dead_letters
    consumer = _consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata of every topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        ends = await true_end_offsets(client_options(settings), tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        letters: list[DeadLetter] = []
        async for record in records_until(consumer, ends, timeout, topic):
            body = orjson.loads(record.value)
            letters.append(DeadLetter(body["topic"], body["partition"], body["offset"], body["reason"], body["received_at"], record.key))
        return letters
    finally:
        await consumer.stop()


async def fetch_event(settings: CommonSettings, letter: DeadLetter, timeout: float = 10.0) -> bytes | None:
    """The event's whole value, read again where it was read; None if retention removed it."""
    tp = TopicPartition(letter.topic, letter.partition)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, letter.offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
                if record.offset == letter.offset:
                    return record.value
                if record.offset > letter.offset:
                    return None  # gone: the partition starts after it
        return None
    finally:
        await consumer.stop()


def as_line(value: bytes) -> bytes:
    """One JSON Lines line: a JSON value re-encoded on one line (a NUL is written `\\u0000`, to
    be found and fixed), anything else as it was, its line breaks made spaces."""
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return value.replace(b"\r", b" ").replace(b"\n", b" ")


async def write_events(settings: CommonSettings, letters: list[DeadLetter], directory: Path) -> dict[str, int]:
    """Write each letter's event to DIRECTORY/<topic>.jsonl (`objections.jsonl` is what
    `consentry import` reads, `notices.jsonl` what `consentry import-notices` reads); return
    how many lines each file got. An event no longer in its topic is skipped (and counted
    under "gone")."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    lines: dict[str, list[bytes]] = {}
    for letter in letters:
        value = await fetch_event(settings, letter)
        name = letter.topic.removeprefix(settings.topic_prefix)
        if value is None:
            written["gone"] = written.get("gone", 0) + 1
            continue
        lines.setdefault(name, []).append(as_line(value))
    for name, values in lines.items():
        (directory / f"{name}.jsonl").write_bytes(b"".join(v + b"\n" for v in values))
        written[name] = len(values)
    return written
