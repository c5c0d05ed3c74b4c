"""The created_at ranges the sink's duplicate look-up reads (services.sink.store.created_ranges):
live posts make one narrow range, a post released late another, never one range over both."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.sink.store import created_ranges

HOUR = 3_600_000_000


def test_close_values_make_one_range_and_a_late_release_its_own() -> None:
    now = 1_748_340_000_000_000
    month_ago = now - 30 * 24 * HOUR
    assert created_ranges([now, now + 5, now - 1_000_000, month_ago]) == [(month_ago, month_ago), (now - 1_000_000, now + 5)]
    assert created_ranges([]) == []


@given(st.lists(st.integers(0, 10**15), min_size=1, max_size=200), st.integers(1, 8))
def test_every_value_is_covered_by_at_most_the_given_number_of_ranges(values: list[int], most: int) -> None:
    ranges = created_ranges(values, most=most)
    assert 1 <= len(ranges) <= most
    assert all(low <= high for low, high in ranges)
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert all(any(low <= v <= high for low, high in ranges) for v in values)
