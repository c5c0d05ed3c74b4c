"""The consent worker's metrics wiring: faust's own sensors, the consent gauges, the lag.

Everything lands in prometheus_client's default registry, which the one `/metrics` page
(services.consent.views) serves. faust's `setup_prometheus_sensors` is not used: it would
register a second `/metrics` page on the same web server; its monitor is installed alone.
"""

from __future__ import annotations

import logging

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import REGISTRY

from consentry import failpoints
from consentry.wire import decode_consent_state
from consentry.lag import LagGauge, lag_of
from consentry.patches import committed_offsets
from consentry.timeutil import now_us
from services.consent import metrics
from services.consent.backlog import ConsentWatch

log = logging.getLogger(__name__)

# A fixed prefix: faust's default is the app id, which carries the topic prefix.
FAUST_PREFIX = "consentry_faust"
_faust_metrics: FaustMetrics | None = None
_lag = LagGauge("consent")


def install_monitoring(app: faust.App, table: faust.Table) -> ConsentWatch:
    global _faust_metrics
    if _faust_metrics is None:  # a registry takes each metric once per process
        _faust_metrics = FaustMetrics.create(REGISTRY, FAUST_PREFIX)
    app.monitor = PrometheusMonitor(metrics=_faust_metrics)

    watch = ConsentWatch()
    metrics.CONSENT_USERS.set_function(lambda: watch.users)
    metrics.BACKLOG.set_function(lambda: len(watch.backlog))
    metrics.BACKLOG_AGE.set_function(lambda: watch.backlog.age_seconds(now_us()))

    @table.on_recover
    async def rebuild_watch() -> None:
        # Runs after every rebalance, once the owned partitions are recovered and before
        # the agent resumes: the table holds exactly this worker's rows, and nothing writes.
        watch.rebuild(table.items(), decode_consent_state)
        log.info("consent table: %d users, %d objections awaiting purge", watch.users, len(watch.backlog))
        # Crash window: the changelogs are read and the sources not resumed yet (a big table
        # takes its time here); consentry/failpoints.py can hold it open.
        await failpoints.slow("consent.table_recovered")

    return watch


def refresh_lag(app: faust.App, topics: set[str]) -> None:
    """consentry_consumer_lag{service="consent"} for the agent's source partitions.

    The high watermark comes from the consumer's last fetch; the position is the offset
    after the last message read (faust's monitor), or the committed offset it started from.
    """
    consumer = app.consumer
    read = app.monitor.tp_read_offsets or {}
    committed = committed_offsets(consumer)
    lags: dict[tuple[str, int], int | None] = {}
    try:
        assignment = consumer.assignment()
    except Exception:  # the consumer is not started yet: no partitions, no lag
        assignment = set()
    for tp in assignment:
        if tp.topic not in topics:
            continue
        last = read.get(tp)
        position = last + 1 if last is not None else committed.get(tp)
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not fetched yet
            highwater = None
        lags[(tp.topic, tp.partition)] = lag_of(highwater, position)
    _lag.update(lags)
