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


_fromisoformat = datetime.fromisoformat


def parse_rfc3339(value: object) -> int | None:
    """Microseconds since the epoch, or None when `value` is not an RFC 3339 date-time with a
    zone, or names an instant outside years 1 to 9999 UTC (which no clock can print back)."""
    if type(value) is not str:
        return None
    # The fast path (ingest parses one per post): the form Consentry writes and most producers
    # send, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`. With its separators in place, datetime's C parser
    # accepts exactly what the pattern does (ASCII digits where they stand, the calendar), and a
    # "Z" cannot overflow; anything else takes the full path, which decides.
    n = len(value)
    if (
        (n == 20 or (n == 27 and value[19] == "."))
        and value[-1] == "Z" and value[10] == "T" and value[4] == "-" and value[7] == "-" and value[13] == ":" and value[16] == ":"
        and value.isascii()
    ):
        try:
            return (_fromisoformat(value) - _EPOCH) // _US
        except ValueError:
            return None
    if not _DATE_TIME.fullmatch(value):
        return None
    return _parse(value)


def _parse(value: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(value.upper())
        parsed.astimezone(UTC)  # OverflowError when the offset pushes it out of range
    except (ValueError, OverflowError):
        return None
    return (parsed - _EPOCH) // _US


_EPOCH_NAIVE = datetime(1970, 1, 1)


def format_rfc3339(us: int) -> str:
    """`2025-05-27T10:00:00.123456Z` (microseconds kept only when non-zero)."""
    # isoformat on a naive UTC datetime: C code, twice as fast as strftime (on the ingest hot path).
    return (_EPOCH_NAIVE + timedelta(0, 0, us)).isoformat() + "Z"


_UNITS_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000, "w": 604_800_000_000}
_SHORT_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def parse_duration_us(value: str) -> int:
    """`30d`, `45m`, `90s`, `12h`, `2w`, or ISO 8601 `P30D`, `PT5M`, `P1DT12H` -> microseconds.
    Raises ValueError on anything else (no months or years: their length varies)."""
    text = value.strip()
    short = _SHORT_DURATION.fullmatch(text)
    if short:
        return int(short[1]) * _UNITS_US[short[2]]
    iso = _ISO_DURATION.fullmatch(text.upper())
    if iso and any(iso.groups()) and not text.upper().endswith("T"):
        weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in iso.groups())
        return ((weeks * 7 + days) * 86_400 + hours * 3_600 + minutes * 60 + seconds) * 1_000_000
    raise ValueError(f"{value!r} is not a duration: use 30d, 12h, 45m, 90s or ISO 8601 such as P30D or PT5M")
