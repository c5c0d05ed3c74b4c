"""The trace context an objection's records carry (W3C traceparent in Kafka headers), with an
in-memory exporter: each hop's span is the child of the span that sent the record it read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consentry import tracing


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer(tracing.TRACER))
    yield exporter
    provider.shutdown()


def test_a_record_carries_its_span_and_the_reader_continues_the_trace(exported: InMemorySpanExporter) -> None:
    with tracing.span("objection.publish", objection_id="o-1") as publish:
        headers = tracing.headers()
    assert [name for name, _ in headers] == ["traceparent"]

    with tracing.span("consent.apply", tracing.context_from(headers)):
        changelog_headers = tracing.headers()
    enforce = tracing.start_span("ingest.enforce", tracing.context_from(changelog_headers))
    enforce.end()

    spans = {s.name: s for s in exported.get_finished_spans()}
    trace_id = publish.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert spans["consent.apply"].parent.span_id == spans["objection.publish"].context.span_id
    assert spans["ingest.enforce"].parent.span_id == spans["consent.apply"].context.span_id
    assert spans["objection.publish"].attributes["consentry.objection_id"] == "o-1"


def test_faust_headers_a_mapping_are_read_too() -> None:
    with_context = {"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "other": b"x"}
    assert tracing.context_from(with_context) is not None
    assert tracing.context_from({"other": b"x"}) is None
    assert tracing.context_from(None) is None and tracing.context_from(()) is None


def test_without_a_span_no_header_is_written() -> None:
    assert tracing.headers() == []


def test_off_unless_configured() -> None:
    assert tracing.setup("ingest") is False


def test_an_otlp_endpoint_without_the_exporter_installed_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(tracing.TracingUnavailable, match=r"consentry\[otlp\]"):
        tracing.setup("ingest", otlp_endpoint="http://collector:4318")
