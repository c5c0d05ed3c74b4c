"""consentry_consumer_lag: what each service reports, and what it stops reporting."""

from __future__ import annotations

from prometheus_client import REGISTRY

from consentry.lag import LagGauge, lag_of


def test_lag_is_what_remains_to_read() -> None:
    assert lag_of(highwater=120, next_offset=100) == 20
    assert lag_of(highwater=120, next_offset=120) == 0
    assert lag_of(highwater=120, next_offset=125) == 0  # a stale watermark is not negative lag
    assert lag_of(highwater=None, next_offset=10) is None
    assert lag_of(highwater=50, next_offset=None) is None
    assert lag_of(highwater=0, next_offset=None) == 0  # empty partition


def sample(service: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("consentry_consumer_lag", {"service": service, "topic": topic, "partition": str(partition)})


def test_partitions_taken_away_by_a_rebalance_disappear() -> None:
    gauge = LagGauge("unit-test")
    gauge.update({("posts", 0): 5, ("posts", 1): 7, ("posts", 2): None})
    assert sample("unit-test", "posts", 0) == 5
    assert sample("unit-test", "posts", 1) == 7
    assert sample("unit-test", "posts", 2) is None  # unknown is not shown as 0

    gauge.update({("posts", 1): 3})
    assert sample("unit-test", "posts", 0) is None
    assert sample("unit-test", "posts", 1) == 3
