"""Timestamps: RFC 3339 strings on the wire, integer microseconds since the epoch inside."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# RFC 3339 section 5.6 (date-time), with a space allowed for the T as its note permits.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def now_us() -> int:
    return time.time_ns() // 1000


def parse_rfc3339(value: object) -> int | None:
    """Microseconds since the epoch, or None when `value` is not an RFC 3339 date-time with a
    zone, or names an instant outside years 1 to 9999 UTC (which no clock can print back)."""
    if type(value) is not str or not _DATE_TIME.fullmatch(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.upper())
        parsed.astimezone(UTC)  # OverflowError when the offset pushes it out of range
    except (ValueError, OverflowError):
        return None
    return (parsed - _EPOCH) // _US


def format_rfc3339(us: int) -> str:
    """`2025-05-27T10:00:00.123456Z` (microseconds kept only when non-zero; years always 4 digits)."""
    m = _EPOCH + timedelta(microseconds=us)
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    return f"{text}.{m.microsecond:06d}Z" if m.microsecond else f"{text}Z"
