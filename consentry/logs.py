"""Logging: one line per event, with context. Never post text, never tokens, never a raw user id.

Every service and command calls `configure(service, level, fmt)` once at start-up (the consent
service through faust's `logging_config`, `logging_config(...)`). Two forms:

- `text` (the default): `time LEVEL service logger: message [ids]`, for people;
- `json` (`CONSENTRY_LOG_FORMAT=json`): one JSON object per line, for log pipelines, with
  `time` (RFC 3339, UTC), `level`, `service`, `logger`, `message`, and the ids known where the
  line was logged: `request_id`, `user` (a pseudonym: `user_ref(user_id)`), `objection_id`,
  `topic`, `partition`, `offset`, `trace_id`; plus `error` (the exception's traceback).

Ids reach a line two ways: `log.info("...", extra=ids(user_id=..., objection_id=...))` on one
call, or `with bound(request_id=...)` for every line logged inside (a contextvar: each asyncio
task sees its own). A raw user id is never written: `ids()` and `bound()` turn `user_id` into
`user`, a keyed hash operators compute with `consentry.logs.user_ref` to find a person's lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import logging.config
import os
import time
from collections.abc import Iterator
from typing import Any

import orjson

FORMATS = ("text", "json")
# The fields a line may carry besides the standard ones, in the order the text form shows them.
ID_FIELDS = ("request_id", "user", "objection_id", "topic", "partition", "offset", "trace_id")
_CHATTY = ("aiokafka", "httpx", "httpcore")

_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("consentry_log_ids", default={})


def user_ref(user_id: str) -> str:
    """The pseudonym of a user in logs: 16 hex digits of SHA-256 over a fixed prefix and the id.
    Stable across services and restarts, so one person's lines can be found (`user_ref(id)`),
    but the id itself never lands in a log file."""
    return hashlib.sha256(b"consentry-log-user:" + user_id.encode()).hexdigest()[:16]


def ids(**fields: Any) -> dict[str, Any]:
    """The `extra=` of one log call: `user_id` becomes `user` (hashed); None values are left out."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name == "user_id":
            out["user"] = user_ref(str(value))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Every line logged inside (in this task) carries these ids too."""
    token = _bound.set({**_bound.get(), **ids(**fields)})
    try:
        yield
    finally:
        _bound.reset(token)


def current_ids() -> dict[str, Any]:
    return dict(_bound.get())


class ContextFilter(logging.Filter):
    """Adds the service name and the bound ids to each record (a call's own `extra` wins)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if not hasattr(record, "trace_id"):
            trace_id = _current_trace_id()
            if trace_id:
                record.trace_id = trace_id
        return True


def _current_trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - a dependency; absent only in a broken install
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "service"):
            record.service = "-"
        line = super().format(record)
        known = [f"{name}={getattr(record, name)}" for name in ID_FIELDS if hasattr(record, name)]
        if known:
            head, sep, tail = line.partition("\n")  # ids on the message line, before a traceback
            line = f"{head} [{' '.join(known)}]{sep}{tail}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": getattr(record, "service", "-"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def logging_config(service: str, level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """The `logging.config.dictConfig` of a service: one stderr handler with the chosen form."""
    level = level.upper()
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelNamesMapping().get(level, logging.INFO)))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter, "service": service}},
        "formatters": {"consentry": {"()": formatter, "fmt": fmt}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "consentry", "filters": ["context"]},
        },
        # aiokafka is chatty at INFO about every group join; keep its warnings.
        "loggers": {name: {"level": quiet} for name in _CHATTY},
        "root": {"level": level, "handlers": ["stderr"]},
    }


def configure(service: str, level: str = "INFO", fmt: str | None = None) -> None:
    """`fmt` None: CONSENTRY_LOG_FORMAT from the environment (the one-off commands), else text."""
    fmt = fmt or os.environ.get("CONSENTRY_LOG_FORMAT", "text").lower()
    logging.config.dictConfig(logging_config(service, level, fmt))
