"""OpenTelemetry traces of an objection's path, with its context carried in Kafka headers.

    gateway  objection.publish      (the HTTP request's objection, sent to consentry.objections)
      consent  consent.apply        (applied to the table; its changelog record carries the context)
        ingest   ingest.enforce     (purge marker into training.posts, `enforced` receipt)
          consent  consent.receipt  (enforced)
          sink     sink.purge       (the Delta delete, `purged` receipt)
            consent  consent.receipt (purged)

Each hop reads the W3C `traceparent` (and `tracestate`) header of the record it acts on and
writes the headers of its span on the records it sends, so one objection is one trace across
the processes. Posts carry no context and get no span: only the objection path is traced.

Off unless configured (`setup`): without a tracer provider the API is a no-op and the headers
just pass through. CONSENTRY_OTLP_ENDPOINT sends spans to an OpenTelemetry collector over
OTLP/HTTP (the `otlp` extra: `pip install 'consentry[otlp]'`); CONSENTRY_TRACE_FILE writes them
as JSON lines to a file (tests, debugging).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

log = logging.getLogger(__name__)

TRACER = "consentry"
TRACE_HEADERS = ("traceparent", "tracestate")
Headers = Sequence[tuple[str, bytes]]

_tracer = trace.get_tracer(TRACER)


class TracingUnavailable(Exception):
    """CONSENTRY_OTLP_ENDPOINT is set but the OTLP exporter is not installed."""


def setup(service: str, otlp_endpoint: str | None = None, trace_file: Path | None = None) -> bool:
    """Install a tracer provider for this process when an exporter is configured; True if so."""
    if not otlp_endpoint and trace_file is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"consentry-{service}", "service.namespace": "consentry"}))
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                "CONSENTRY_OTLP_ENDPOINT is set but the OTLP exporter is not installed: pip install 'consentry[otlp]'"
            ) from exc
        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if trace_file is not None:
        # Simple (synchronous): every span is in the file once it ended, even if the process is killed after.
        provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(trace_file)))
    trace.set_tracer_provider(provider)
    log.info("tracing on: %s", ", ".join(filter(None, [otlp_endpoint and f"OTLP to {otlp_endpoint}", trace_file and f"file {trace_file}"])))
    return True


class FileSpanExporter:
    """Appends each span as one JSON line (several processes may share the file: one write each)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(span_dict(s)) + "\n" for s in spans).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def span_dict(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


def headers() -> list[tuple[str, bytes]]:
    """The Kafka headers carrying the current span's context (empty when there is none)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return []  # nothing to carry (no baggage is used): skips the propagators, per record sent
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def context_from(record_headers: Headers | Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> Context | None:
    """The context a record's headers carry (None: none)."""
    if not record_headers:
        return None
    if isinstance(record_headers, Mapping):  # faust's event.headers
        record_headers = record_headers.items()
    carrier = {}
    for name, value in record_headers:
        if name in TRACE_HEADERS and value is not None:
            carrier[name] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return propagate.extract(carrier) if "traceparent" in carrier else None


def has_context(record_headers: Headers | None) -> bool:
    return bool(record_headers) and any(name == "traceparent" for name, _ in record_headers)  # type: ignore[union-attr]


@contextlib.contextmanager
def span(name: str, parent: Context | None = None, kind: trace.SpanKind = trace.SpanKind.INTERNAL, **attributes: Any) -> Iterator[trace.Span]:
    """A span, current inside the block; `parent`: the context a record carried."""
    attrs = {f"consentry.{k}" if "." not in k else k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attrs) as current:
        yield current


def start_span(name: str, parent: Context | None = None, kind: trace.SpanKind = trace.SpanKind.INTERNAL, start_time: int | None = None, **attributes: Any) -> trace.Span:
    """A span the caller ends (`span.end()`): for work that is not one block of code."""
    attrs = {f"consentry.{k}" if "." not in k else k: v for k, v in attributes.items() if v is not None}
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attrs, start_time=start_time)


use_span = trace.use_span


def recording() -> bool:
    """Whether the current span records attributes: callers skip computing them when not."""
    return trace.get_current_span().is_recording()


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (none: nothing)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes({f"consentry.{k}": v for k, v in attributes.items() if v is not None})


def trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
