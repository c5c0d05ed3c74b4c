"""Bulk import of historical objection events (JSON Lines), for `consentry import` and the
gateway's admin endpoint. Imported objections are ordinary objection events: they count
and purge exactly like new ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from consentry.events import Invalid, ObjectionEvent, encode_objection, objection_from_dict
from consentry.kafka import BatchSender
from consentry.partitioning import home_partition
from consentry.settings import CommonSettings

FUTURE_SKEW_US = 5 * 60 * 1_000_000
MAX_REPORTED = 1000


def parse_import_line(line: bytes, now_us: int) -> ObjectionEvent | Invalid | None:
    """One line: an objection event, the reason it is rejected, or None for a blank line."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"not valid JSON ({exc.msg})")
    event = objection_from_dict(obj)
    if type(event) is ObjectionEvent and event.received_at_us > now_us + FUTURE_SKEW_US:
        return Invalid("bad_timestamp", "'received_at' is in the future")
    return event


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected_count: int = 0
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
            "rejected_lines": [{"line": n, "reason": r} for n, r in self.rejected],
        }


async def import_lines(
    producer: AIOKafkaProducer,
    settings: CommonSettings,
    lines: Iterable[bytes],
    now_us: int,
    progress: Callable[[int], None] | None = None,
    flush_every: int = 50_000,
) -> ImportReport:
    """Validate and publish; returns once every accepted event is acknowledged by the broker."""
    report = ImportReport()
    seen: set[str] = set()
    sender = BatchSender(producer)
    topic = settings.topics.objections
    pending = 0
    for number, line in enumerate(lines, start=1):
        parsed = parse_import_line(line, now_us)
        if parsed is not None:
            if type(parsed) is Invalid:
                report.reject(number, parsed.reason)
            elif parsed.objection_id in seen:
                report.duplicates += 1
            else:
                seen.add(parsed.objection_id)
                sender.append(topic, home_partition(parsed.user_id, settings.partitions), parsed.user_id.encode(), encode_objection(parsed))
                report.accepted += 1
                pending += 1
                if pending >= flush_every:
                    await sender.send()
                    pending = 0
        if progress is not None:
            progress(len(line) + 1)
    await sender.flush()
    return report
