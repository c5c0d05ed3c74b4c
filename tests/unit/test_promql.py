"""The dashboard's arithmetic over scrapes: rates between two scrapes and PromQL's
histogram_quantile, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from consentry.scrape import parse_metrics
from services.gateway.console.promql import bucket_increase, buckets, by_label, counter_increase, histogram_quantile, increase, rate, value

BEFORE = parse_metrics(
    """
# TYPE consentry_ingest_dropped_total counter
consentry_ingest_dropped_total{reason="objected"} 10
consentry_ingest_dropped_total{reason="minor"} 4
# TYPE consentry_ingest_accepted_total counter
consentry_ingest_accepted_total 100
"""
)
AFTER = parse_metrics(
    """
# TYPE consentry_ingest_dropped_total counter
consentry_ingest_dropped_total{reason="objected"} 30
consentry_ingest_dropped_total{reason="minor"} 4
consentry_ingest_dropped_total{reason="not_public"} 6
# TYPE consentry_ingest_accepted_total counter
consentry_ingest_accepted_total 300
"""
)


def test_rate_is_the_increase_per_second_between_two_scrapes() -> None:
    assert rate(BEFORE, AFTER, 10.0, "consentry_ingest_accepted_total") == 20.0
    assert rate(BEFORE, AFTER, 10.0, "consentry_ingest_dropped_total", reason="objected") == 2.0
    # a label seen for the first time counted from zero
    assert rate(BEFORE, AFTER, 2.0, "consentry_ingest_dropped_total", reason="not_public") == 3.0
    # every reason together
    assert increase(BEFORE, AFTER, "consentry_ingest_dropped_total") == 26.0


def test_a_counter_that_went_down_was_reset_by_a_restart() -> None:
    assert counter_increase(100.0, 130.0) == 30.0
    assert counter_increase(100.0, 7.0) == 7.0  # restarted, then counted 7
    restarted = parse_metrics("# TYPE consentry_ingest_accepted_total counter\nconsentry_ingest_accepted_total 5\n")
    assert rate(AFTER, restarted, 1.0, "consentry_ingest_accepted_total") == 5.0


def test_no_rate_without_elapsed_time() -> None:
    assert rate(BEFORE, AFTER, 0.0, "consentry_ingest_accepted_total") is None


def test_values_sum_the_matching_series() -> None:
    assert value(AFTER, "consentry_ingest_dropped_total") == 40.0
    assert value(AFTER, "consentry_ingest_dropped_total", reason="minor") == 4.0
    assert value(AFTER, "consentry_not_there") is None
    assert by_label(AFTER, "consentry_ingest_dropped_total", "reason") == {"objected": 30.0, "minor": 4.0, "not_public": 6.0}


HISTOGRAM = parse_metrics(
    """
# TYPE consentry_objection_enforce_seconds histogram
consentry_objection_enforce_seconds_bucket{le="0.05"} 0
consentry_objection_enforce_seconds_bucket{le="0.1"} 1
consentry_objection_enforce_seconds_bucket{le="0.25"} 3
consentry_objection_enforce_seconds_bucket{le="+Inf"} 4
consentry_objection_enforce_seconds_count 4
consentry_objection_enforce_seconds_sum 1.2
"""
)


def test_buckets_are_read_sorted_by_bound() -> None:
    assert buckets(HISTOGRAM, "consentry_objection_enforce_seconds") == [(0.05, 0.0), (0.1, 1.0), (0.25, 3.0), (math.inf, 4.0)]


def test_histogram_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    b = buckets(HISTOGRAM, "consentry_objection_enforce_seconds")
    # rank 2 of 4 falls in (0.1, 0.25] holding observations 2..3: halfway
    assert histogram_quantile(0.5, b) == pytest.approx(0.175)
    # rank 1 is the last of (0.05, 0.1]
    assert histogram_quantile(0.25, b) == pytest.approx(0.1)
    # rank 0.4 in the first non-empty bucket, which starts at the previous bound
    assert histogram_quantile(0.1, b) == pytest.approx(0.05 + 0.05 * 0.4)
    # beyond the last finite bucket PromQL answers that bound
    assert histogram_quantile(0.99, b) == 0.25


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None  # nothing observed
    assert histogram_quantile(0.5, [(1.0, 2.0), (2.0, 4.0)]) is None  # no +Inf bucket
    assert histogram_quantile(1.5, [(1.0, 2.0), (math.inf, 2.0)]) == math.inf
    assert histogram_quantile(-1, [(1.0, 2.0), (math.inf, 2.0)]) == -math.inf
    # first bucket: from 0 to its bound
    assert histogram_quantile(0.5, [(2.0, 10.0), (math.inf, 10.0)]) == pytest.approx(1.0)


def test_bucket_increase_gives_the_recent_observations_only() -> None:
    old = [(0.1, 1.0), (1.0, 2.0), (math.inf, 2.0)]
    new = [(0.1, 1.0), (1.0, 5.0), (math.inf, 6.0)]
    assert bucket_increase(old, new) == [(0.1, 0.0), (1.0, 3.0), (math.inf, 4.0)]
    assert bucket_increase(new, old) == old  # the service restarted: all it has is new
