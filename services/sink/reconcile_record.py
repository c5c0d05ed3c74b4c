"""The reconciliation record: what the passes of `consentry reconcile` (and the sink's own
periodic pass) leave beside the training store, so that the long-running sink can show them
(a one-shot command cannot be scraped; see services.sink.vacuum_record for why a file beside
the table and not the Delta log). At `<table>/_consentry/reconcile.json`.

Two passes ending at the same moment could lose one count; the sink runs one pass at a time
(only the replica that owns partition 0 of training.posts), and a cron job should too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

RECORD_NAME = "reconcile.json"


@dataclass(frozen=True)
class ReconcileRecord:
    runs: int  # passes that ended, including those that found nothing
    rows_purged_total: int  # rows every pass so far deleted: each one a leak caught
    last_ended_at_us: int
    last_seconds: float
    last_users: int  # objected users (with an objection interval) the last pass checked
    last_rows_scanned: int
    last_rows_purged: int


@dataclass(frozen=True)
class PassFigures:
    """What one pass did (services.sink.reconcile)."""

    users: int
    rows_scanned: int
    rows_purged: int
    users_purged: int
    seconds: float


def next_record(previous: ReconcileRecord | None, figures: PassFigures, ended_at_us: int) -> ReconcileRecord:
    runs = previous.runs if previous is not None else 0
    total = previous.rows_purged_total if previous is not None else 0
    return ReconcileRecord(runs + 1, total + figures.rows_purged, ended_at_us, figures.seconds, figures.users, figures.rows_scanned, figures.rows_purged)


def encode_record(record: ReconcileRecord) -> bytes:
    return orjson.dumps(asdict(record))


def decode_record(raw: bytes) -> ReconcileRecord | None:
    """None for anything unreadable: a damaged record must not stop the sink."""
    try:
        obj = orjson.loads(raw)
        return ReconcileRecord(
            int(obj["runs"]), int(obj["rows_purged_total"]), int(obj["last_ended_at_us"]), float(obj["last_seconds"]),
            int(obj["last_users"]), int(obj["last_rows_scanned"]), int(obj["last_rows_purged"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
