"""The RFC 3339 fast path (consentry.timeutil) answers exactly as the full parse, for every string."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from consentry import timeutil
from consentry.timeutil import format_rfc3339, parse_rfc3339


def full_parse(value: str) -> int | None:
    """parse_rfc3339 without its fast path."""
    return timeutil._parse(value) if timeutil._DATE_TIME.fullmatch(value) else None


# The canonical form and its near misses: one character replaced anywhere.
CANONICAL = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)).map(
    lambda d: format_rfc3339((d - datetime(1970, 1, 1)) // timedelta(microseconds=1))
)
CHARS = st.sampled_from(list("0123456789:-.,TtZzWa +_²٣\x00") + ["60", "00.000000", "", "+01:00", "1"])


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    text = draw(CANONICAL)
    at = draw(st.integers(0, len(text) - 1))
    return text[:at] + draw(CHARS) + text[at + 1:]


@settings(max_examples=100, deadline=None)
@given(st.one_of(CANONICAL, near_misses(), st.text(max_size=30)))
def test_fast_path_agrees_with_the_full_parse(value: str) -> None:
    assert parse_rfc3339(value) == full_parse(value)


def test_invalid_dates_in_the_canonical_shape_are_refused() -> None:
    for value in ("2025-02-30T10:00:00Z", "2023-02-29T00:00:00Z", "2025-13-01T00:00:00Z", "2025-05-27T24:00:00Z",
                  "2025-05-27T10:60:00Z", "2025-05-27T10:00:60Z", "0000-01-01T00:00:00Z", "2025-05-27T10:00:00.12345aZ",
                  "2025-05-27T100000.1Z", "2025-W22-1T10:00:00Z", "2025-05-27T10:00:0 Z", "2025-05-27T10:00:+1Z", "2025-05-27T10:00:00.+12345Z"):
        assert parse_rfc3339(value) is None, value
    assert parse_rfc3339("2024-02-29T23:59:59.999999Z") == (
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    ) // timedelta(microseconds=1)


def test_every_single_character_change_of_the_canonical_forms_agrees() -> None:
    """Every ASCII character (and a few others) at every position of both canonical forms."""
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["\x00", "\n", "²", "٣", "é"]
    for canonical in ("2024-02-29T23:59:59Z", "2024-02-29T23:59:59.999999Z", "1999-12-31T00:00:00.000001Z"):
        for at in range(len(canonical)):
            for char in alphabet:
                value = canonical[:at] + char + canonical[at + 1:]
                assert parse_rfc3339(value) == full_parse(value), value
