"""The little of PromQL the dashboard needs, over parsed scrapes (consentry.scrape.parse_metrics):
sums by label, counter increases and rates between two scrapes, and histogram_quantile.
Pure functions over plain data."""

from __future__ import annotations

import math
from collections.abc import Iterable

Series = tuple[tuple[str, str], ...]  # sorted label items
Metrics = dict[str, dict[Series, float]]  # {sample name: {labels: value}}


def _matches(series: Series, wanted: dict[str, str]) -> bool:
    labels = dict(series)
    return all(labels.get(k) == v for k, v in wanted.items())


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """Sum of the matching series (like `sum(name{labels})`); None if there is none."""
    found = [v for s, v in metrics.get(name, {}).items() if _matches(s, labels)]
    return sum(found) if found else None


def by_label(metrics: Metrics, name: str, label: str, **labels: str) -> dict[str, float]:
    """`sum by (label) (name{labels})`."""
    out: dict[str, float] = {}
    for series, v in metrics.get(name, {}).items():
        if _matches(series, labels):
            key = dict(series).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def counter_increase(before: float, after: float) -> float:
    """How much a counter grew; a smaller value means the process restarted (a reset),
    so everything it counts now is new, as in PromQL's increase()."""
    return after - before if after >= before else after


def increase(before: Metrics, after: Metrics, name: str, **labels: str) -> float:
    """Per-series increase, summed. A series missing before (first increment) started at 0."""
    old = before.get(name, {})
    return sum(counter_increase(old.get(series, 0.0), v) for series, v in after.get(name, {}).items() if _matches(series, labels))


def rate(before: Metrics, after: Metrics, seconds: float, name: str, **labels: str) -> float | None:
    """Per-second increase between two scrapes `seconds` apart."""
    if seconds <= 0:
        return None
    return increase(before, after, name, **labels) / seconds


Buckets = list[tuple[float, float]]  # (upper bound `le`, cumulative count), sorted by bound


def buckets(metrics: Metrics, name: str, **labels: str) -> Buckets:
    """The cumulative buckets of histogram `name` (its `_bucket` samples), summed over series."""
    counts: dict[float, float] = {}
    for series, v in metrics.get(f"{name}_bucket", {}).items():
        if _matches(series, labels):
            le = float(dict(series)["le"])
            counts[le] = counts.get(le, 0.0) + v
    return sorted(counts.items())


def bucket_increase(before: Buckets, after: Buckets) -> Buckets:
    """Buckets of the observations made between two scrapes (with reset handling)."""
    old = dict(before)
    if any(count < old.get(le, 0.0) for le, count in after):
        return list(after)  # the process restarted: everything in `after` is new
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def histogram_quantile(q: float, cumulative: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram, interpolating linearly inside the bucket, exactly as
    PromQL's histogram_quantile: above the highest finite bound it answers that bound;
    None when there is no observation or no +Inf bucket."""
    bs = sorted(cumulative)
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(bs) < 2 or not math.isinf(bs[-1][0]):
        return None
    total = bs[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, (_, count) in enumerate(bs[:-1]) if count >= rank), len(bs) - 1)
    if index == len(bs) - 1:
        return bs[-2][0]
    upper, count = bs[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else bs[index - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * ((rank - below) / in_bucket)
