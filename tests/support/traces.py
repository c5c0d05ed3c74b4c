"""Reading the spans services write with CONSENTRY_TRACE_FILE (consentry/tracing.py), and the
check that one objection is one connected trace across the processes, its log lines in JSON
carrying the trace's id and the user's pseudonym (used by tests/e2e/test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from consentry.logs import user_ref
from tests.support.system import System
from tests.support.wait import eventually

# From the gateway's publish to the purged receipt applied by the consent service.
OBJECTION_PATH = ["objection.publish", "consent.apply", "ingest.enforce", "sink.purge", "consent.receipt"]


def tracing_env(trace_file: Path) -> dict[str, str]:
    """What the services need to write spans to `trace_file` and log JSON lines."""
    return {"CONSENTRY_TRACE_FILE": str(trace_file), "CONSENTRY_LOG_FORMAT": "json"}


def spans_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def objection_trace(trace_file: Path, objection_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The spans of the objection's trace, once its purged receipt's span is written."""

    def probe() -> list[dict[str, Any]]:
        written = spans_of(trace_file)
        roots = [s for s in written if s["name"] == "objection.publish" and s["attributes"].get("consentry.objection_id") == objection_id]
        assert len(roots) <= 1, roots
        mine = [s for s in written if roots and s["trace_id"] == roots[0]["trace_id"]]
        purged = [s for s in mine if s["name"] == "consent.receipt" and s["attributes"].get("consentry.receipt") == "purged"]
        return mine if purged else []

    return eventually(probe, timeout=timeout, what=f"the purged receipt's span in the trace of {objection_id}")


def assert_one_connected_trace(system: System, trace_file: Path, objection_id: str, user: str) -> None:
    spans = objection_trace(trace_file, objection_id)
    by_id = {s["span_id"]: s for s in spans}
    [root] = [s for s in spans if s["parent_id"] is None]
    # The root is the HTTP request (FastAPI's own server span); the publish is inside it.
    assert root["name"] == "POST /v1/objections" and root["service"] == "consentry-gateway" and root["kind"] == "SERVER", root
    assert all(s["parent_id"] in by_id for s in spans if s is not root), "a span whose parent is not in the trace"

    def chain(span: dict[str, Any]) -> list[str]:
        names = [span["name"]]
        while span["parent_id"] is not None:
            span = by_id[span["parent_id"]]
            names.append(span["name"])
        return names[::-1]

    [purged] = [s for s in spans if s["name"] == "consent.receipt" and s["attributes"]["consentry.receipt"] == "purged"]
    path = chain(purged)
    assert path[0] == root["name"] and path[-len(OBJECTION_PATH):] == OBJECTION_PATH, path
    assert {s["service"] for s in spans} == {"consentry-gateway", "consentry-consent", "consentry-ingest", "consentry-sink"}
    assert all(user not in orjson.dumps(s).decode() for s in spans), "a raw user id in a span"

    # Each service's log lines about this objection: JSON, with the trace's id and the user's pseudonym.
    for service in ("gateway", "consent", "ingest", "sink"):
        log = system.log(service)
        lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
        about = [e for e in lines if e.get("trace_id") == root["trace_id"]]
        assert about, f"{service} logged no line with the objection's trace id"
        assert all(e["user"] == user_ref(user) and e["service"] == service for e in about), about
        assert f'"{user}"' not in log, f"{service} logged the raw user id"
