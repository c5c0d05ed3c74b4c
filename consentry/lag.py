"""Consumer lag, one gauge for every service: `consentry_consumer_lag{service,topic,partition}`.

Defined once here (not per service) so that a process importing several services' modules
(the tests do) registers it once.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Gauge

CONSUMER_LAG = Gauge("consentry_consumer_lag", "Records behind the high watermark", ["service", "topic", "partition"])


def lag_of(highwater: int | None, next_offset: int | None) -> int | None:
    """Records not yet read: high watermark minus the next offset to read (None if unknown)."""
    if highwater == 0:
        return 0  # an empty partition: nothing to read, wherever the consumer stands
    if highwater is None or next_offset is None:
        return None
    return max(highwater - next_offset, 0)


class LagGauge:
    """The lag series of one service: each update replaces the set, so partitions that a
    rebalance took away disappear instead of showing their last value forever."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._shown: set[tuple[str, int]] = set()

    def update(self, lags: Mapping[tuple[str, int], int | None]) -> None:
        known = {tp: lag for tp, lag in lags.items() if lag is not None}
        for topic, partition in self._shown - known.keys():
            try:
                CONSUMER_LAG.remove(self.service, topic, str(partition))
            except KeyError:
                pass
        for (topic, partition), lag in known.items():
            CONSUMER_LAG.labels(self.service, topic, str(partition)).set(lag)
        self._shown = set(known)
