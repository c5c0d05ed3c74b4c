"""The consent worker's metrics wiring: faust's own sensors, the consent gauges, the lag.

Everything lands in prometheus_client's default registry, which the one `/metrics` page
(services.consent.views) serves. faust's `setup_prometheus_sensors` is not used: it would
register a second `/metrics` page on the same web server; its monitor is installed alone.
"""

from __future__ import annotations

import logging

import faust
from faust.sensors.monitor import Monitor
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


class ConsentMonitor(PrometheusMonitor):
    """faust's PrometheusMonitor, each labelled series looked up once: prometheus_client's
    `labels()` (argument checks, a lock, a dict) ran about eight times per event, for label
    values that never change (the topic, the partition, the table). Same series, same values."""

    def __init__(self, metrics: FaustMetrics, **kwargs: object) -> None:
        super().__init__(metrics=metrics, **kwargs)
        self._series: dict[tuple, object] = {}
        self._stream_labels: dict[object, str] = {}

    def _labelled(self, metric, *values):  # type: ignore[no-untyped-def]
        key = (id(metric), values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*values)
        return series

    def on_message_in(self, tp, offset, message):  # type: ignore[no-untyped-def]
        Monitor.on_message_in(self, tp, offset, message)
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        self._labelled(m.messages_received_per_topics, tp.topic).inc()
        self._labelled(m.messages_received_per_topics_partition, tp.topic, tp.partition).set(offset)

    def on_stream_event_in(self, tp, offset, stream, event):  # type: ignore[no-untyped-def]
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        label = self._stream_labels.get(stream)  # built from the stream's name: once per stream
        if label is None:
            label = self._stream_labels[stream] = f"stream.{self._stream_label(stream)}.events"
        self._labelled(m.total_events_per_stream, label).inc()
        return state

    def on_table_get(self, table, key):  # type: ignore[no-untyped-def]
        Monitor.on_table_get(self, table, key)
        self._labelled(self._metrics.table_operations, f"table.{table.name}", self.KEYS_RETRIEVED).inc()

    def on_table_set(self, table, key, value):  # type: ignore[no-untyped-def]
        Monitor.on_table_set(self, table, key, value)
        self._labelled(self._metrics.table_operations, f"table.{table.name}", self.KEYS_UPDATED).inc()

    def on_send_initiated(self, producer, topic, message, keysize, valsize):  # type: ignore[no-untyped-def]
        self._labelled(self._metrics.topic_messages_sent, f"topic.{topic}").inc()
        return Monitor.on_send_initiated(self, producer, topic, message, keysize, valsize)

    def track_tp_end_offset(self, tp, offset):  # type: ignore[no-untyped-def]
        Monitor.track_tp_end_offset(self, tp, offset)
        self._labelled(self._metrics.topic_partition_end_offset, tp.topic, tp.partition).set(offset)


def install_monitoring(app: faust.App, table: faust.Table) -> ConsentWatch:
    global _faust_metrics
    if _faust_metrics is None:  # a registry takes each metric once per process
        _faust_metrics = FaustMetrics.create(REGISTRY, FAUST_PREFIX)
    app.monitor = ConsentMonitor(metrics=_faust_metrics)

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
