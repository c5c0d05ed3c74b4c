"""Bulk imports (JSON Lines) of historical objection events, for `consentry import` and the
gateway's `POST /v1/admin/objections:import`, and of notices, for `consentry import-notices`
and `POST /v1/admin/notices:import`. Imported events are ordinary events on their topic
(`objections`, `notices`): they count exactly like new ones.

Each objection line is one objection event as in the contract, with its original
`received_at`; `channel` may be left out (it is then `import`). Each notice line is one
notice as in the contract, with its original `sent_at`. Lines are validated one by one; a
bad line is reported with its number and reason and never stops the import. A line whose
id came earlier in the same import is skipped as a duplicate (one already imported before
is harmless too: the consent table records an id once). What differs between the two kinds
is an `Importable`: how a line is parsed, its id, how it is encoded and on which topic.

The reading loop is the same for a file and for an HTTP body streamed in chunks; events
are published in chunks, with one chunk in flight while the next is parsed, so memory
stays bounded whatever the size of the input.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from aiokafka import AIOKafkaProducer

from consentry.domain.model import Channel, Invalid, Notice, ObjectionEvent
from consentry.wire import encode_notice, encode_objection, notice_from_dict, objection_from_dict
from consentry.kafka import BatchSender, producer_options
from consentry.partitioning import home_partition
from consentry.settings import CommonSettings
from consentry.topics import Topics

FUTURE_SKEW_US = 5 * 60 * 1_000_000
MAX_REPORTED = 1000
MAX_LINE_BYTES = 16 * 1024
CHUNK_EVENTS = 20_000

E = TypeVar("E", ObjectionEvent, Notice)
Publish = Callable[[Sequence[E]], Awaitable[None]]
Progress = Callable[[int, int], None]  # (bytes read so far, lines read so far)
# A second look at an accepted event before it is published (the gateway's import checks an
# operator's right to import it): the reason it is refused, or None.
Screen = Callable[[Any], Awaitable[Invalid | None]]


def _json_line(line: bytes) -> Any | Invalid | None:
    """A line's JSON value, the reason it is rejected, or None for a blank line."""
    if len(line) > MAX_LINE_BYTES:
        return Invalid("too_large", f"line is longer than {MAX_LINE_BYTES} bytes")
    line = line.strip()
    if not line:
        return None
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"not valid JSON ({exc.msg})")


def parse_import_line(line: bytes, now_us: int) -> ObjectionEvent | Invalid | None:
    """One line: an objection event, the reason it is rejected, or None for a blank line."""
    obj = _json_line(line)
    if obj is None or type(obj) is Invalid:
        return obj
    if type(obj) is dict and "channel" not in obj:
        obj["channel"] = Channel.IMPORT.value
    event = objection_from_dict(obj)
    if type(event) is ObjectionEvent and event.received_at_us > now_us + FUTURE_SKEW_US:
        return Invalid("bad_timestamp", "'received_at' is in the future")
    return event


def parse_notice_line(line: bytes, now_us: int) -> Notice | Invalid | None:
    """One line: a notice, the reason it is rejected, or None for a blank line."""
    obj = _json_line(line)
    if obj is None or type(obj) is Invalid:
        return obj
    notice = notice_from_dict(obj)
    if type(notice) is Notice and notice.sent_at_us > now_us + FUTURE_SKEW_US:
        return Invalid("bad_timestamp", "'sent_at' is in the future")
    return notice


@dataclass(frozen=True)
class Importable(Generic[E]):
    """One kind of importable event."""

    name: str  # plural, for people: "objections", "notices"
    parse_line: Callable[[bytes, int], E | Invalid | None]
    id_of: Callable[[E], str]
    encode: Callable[[E], bytes]
    topic_of: Callable[[Topics], str]


OBJECTIONS: Importable[ObjectionEvent] = Importable(
    "objections", parse_import_line, lambda e: e.objection_id, encode_objection, lambda t: t.objections
)
NOTICES: Importable[Notice] = Importable("notices", parse_notice_line, lambda n: n.notice_id, encode_notice, lambda t: t.notices)


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected_count: int = 0
    lines: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # the first MAX_REPORTED (line, reason)

    def reject(self, line_number: int, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REPORTED:
            self.rejected.append((line_number, reason))

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected_count,
            "lines": self.lines,
            "rejected_lines": [{"line": n, "reason": r} for n, r in self.rejected],
            "rejected_lines_truncated": self.rejected_count > len(self.rejected),
        }


class ImportFailed(Exception):
    """Publishing stopped (the broker did not acknowledge). Lines before `report.lines` may
    or may not be recorded: importing the same file again is safe."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


class ImportBatch(Generic[E]):
    """Validates lines and collects the accepted events of one chunk. Pure, no I/O."""

    def __init__(self, now_us: int, kind: Importable[E]) -> None:
        self.now_us = now_us
        self.kind = kind
        self.report = ImportReport()
        self.seen: set[str] = set()
        self.events: list[E] = []

    def feed(self, line: bytes) -> None:
        self.report.lines += 1
        parsed = self.kind.parse_line(line, self.now_us)
        if parsed is None:
            return
        if type(parsed) is Invalid:
            self.report.reject(self.report.lines, parsed.reason)
            return
        event_id = self.kind.id_of(parsed)  # type: ignore[arg-type]
        if event_id in self.seen:
            self.report.duplicates += 1
        else:
            self.seen.add(event_id)
            self.events.append(parsed)  # type: ignore[arg-type]
            self.report.accepted += 1

    def refuse_last(self, reason: str) -> None:
        """The event just accepted is refused after all (a Screen said so): reported on its line."""
        self.events.pop()
        self.report.accepted -= 1
        self.report.reject(self.report.lines, reason)

    def take(self) -> list[E]:
        events, self.events = self.events, []
        return events


async def split_lines(chunks: AsyncIterable[bytes], max_line: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
    """Lines of a streamed body. An over-long line is cut to `max_line + 1` bytes (so it is
    still rejected as too long) and the rest of it skipped, keeping memory bounded."""
    buffer = b""
    skipping = False
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if not skipping:
                yield buffer[start:end]
            skipping = False
            start = end + 1
        buffer = buffer[start:]
        if len(buffer) > max_line:
            if not skipping:
                yield buffer[: max_line + 1]
                skipping = True
            buffer = b""
    if buffer and not skipping:
        yield buffer


async def _aiter(lines: Iterable[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


async def import_lines(
    publish: Publish,
    lines: Iterable[bytes] | AsyncIterable[bytes],
    now_us: int,
    progress: Progress | None = None,
    chunk_events: int = CHUNK_EVENTS,
    kind: Importable = OBJECTIONS,
    screen: Screen | None = None,
) -> ImportReport:
    """Validate every line and publish the accepted events; returns once all of them are
    acknowledged by the broker. Raises ImportFailed when publishing fails. `screen` may refuse
    an accepted event (reported on its line like any rejection); what it raises stops the
    import like a failed publish does, with the lines before it possibly recorded."""
    batch: ImportBatch = ImportBatch(now_us, kind)
    source = lines if isinstance(lines, AsyncIterable) else _aiter(lines)
    in_flight: asyncio.Task[None] | None = None
    read = 0

    async def settle() -> None:
        nonlocal in_flight
        task, in_flight = in_flight, None
        if task is None:
            return
        try:
            await task
        except Exception as exc:
            raise ImportFailed(f"import stopped at line {batch.report.lines}: {type(exc).__name__}: {exc}", batch.report) from exc

    try:
        async for line in source:
            accepted = batch.report.accepted
            batch.feed(line)
            if screen is not None and batch.report.accepted > accepted:
                refused = await screen(batch.events[-1])
                if refused is not None:
                    batch.refuse_last(refused.reason)
            read += len(line) + 1
            if len(batch.events) >= chunk_events:
                await settle()
                in_flight = asyncio.ensure_future(publish(batch.take()))
                if progress is not None:
                    progress(read, batch.report.lines)
        await settle()
        if batch.events:
            in_flight = asyncio.ensure_future(publish(batch.take()))
            await settle()
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()
    if progress is not None:
        progress(read, batch.report.lines)
    return batch.report


async def publish_events(
    producer: AIOKafkaProducer, topic: str, partitions: int, events: Sequence[E], encode: Callable[[E], bytes]
) -> None:
    """Send events to their users' home partitions; returns once the broker acknowledged all."""
    sender = BatchSender(producer)
    for event in events:
        sender.append(topic, home_partition(event.user_id, partitions), event.user_id.encode(), encode(event))
    await sender.flush()


async def publish_objections(producer: AIOKafkaProducer, topic: str, partitions: int, events: Sequence[ObjectionEvent]) -> None:
    await publish_events(producer, topic, partitions, events, encode_objection)


async def import_file(
    settings: CommonSettings, path: Path, now_us: int, progress: Progress | None = None, kind: Importable = OBJECTIONS
) -> ImportReport:
    """`consentry import FILE` (`consentry import-notices FILE`): the whole file onto the
    `objections` (`notices`) topic of `settings`."""
    producer = AIOKafkaProducer(**producer_options(settings), linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        topic, partitions = kind.topic_of(settings.topics), settings.partitions

        async def publish(events: Sequence[Any]) -> None:
            await publish_events(producer, topic, partitions, events, kind.encode)

        with open(path, "rb") as handle:
            return await import_lines(publish, handle, now_us, progress, kind=kind)
    finally:
        await producer.stop()
