"""services.consent.monitoring.ConsentMonitor: the same series and values as faust's
PrometheusMonitor, with each labelled series looked up once."""

from __future__ import annotations

from types import SimpleNamespace

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry

from services.consent.monitoring import ConsentMonitor


class Task:
    pass


class Stream:  # faust's monitor keeps streams and their tasks in WeakKeyDictionaries
    shortlabel = "Stream: consent-agent"

    def __init__(self) -> None:
        self.task_owner = Task()


def samples_after_events(monitor_class: type) -> dict:
    registry = CollectorRegistry()
    monitor = monitor_class(metrics=FaustMetrics.create(registry, "test"))
    table = SimpleNamespace(name="consent")
    stream = Stream()
    message = SimpleNamespace(key=b"user-1", value=b"{}")
    for offset, tp in enumerate([TP("objections", 0), TP("notices", 1), TP("objections", 0)]):
        monitor.on_message_in(tp, offset, message)
        monitor.track_tp_end_offset(tp, offset + 10)
        state = monitor.on_stream_event_in(tp, offset, stream, SimpleNamespace(message=message))
        monitor.on_table_get(table, b"user-1")
        monitor.on_table_set(table, b"user-1", b"{}")
        monitor.on_send_initiated(None, "consent-state", message, 6, 2)
        monitor.on_stream_event_out(tp, offset, stream, SimpleNamespace(message=message), state)
        monitor.on_message_out(tp, offset, message)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith(("_created", "_bucket", "_sum"))  # times differ between runs
    }


def test_the_consent_monitor_records_what_fausts_monitor_records() -> None:
    ours, fausts = samples_after_events(ConsentMonitor), samples_after_events(PrometheusMonitor)
    assert ours == fausts
    assert ours[("test_messages_received_per_topic_total", (("topic", "objections"),))] == 2
