"""Timestamps: RFC 3339 strings on the wire, integer microseconds since the epoch inside."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def now_us() -> int:
    return time.time_ns() // 1000


def parse_rfc3339(value: str) -> int | None:
    """Microseconds since the epoch, or None when `value` is not an RFC 3339 date-time with a zone."""
    if len(value) < 20 or len(value) > 40 or value[10] not in "Tt ":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return (parsed - _EPOCH) // _US


_EPOCH_NAIVE = datetime(1970, 1, 1)


def format_rfc3339(us: int) -> str:
    """`2025-05-27T10:00:00.123456Z` (microseconds kept only when non-zero)."""
    # isoformat on a naive UTC datetime: C code, twice as fast as strftime (on the ingest hot path).
    return (_EPOCH_NAIVE + timedelta(0, 0, us)).isoformat() + "Z"
