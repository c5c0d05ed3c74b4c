"""The vacuum record: what `consentry vacuum` leaves beside the training store so that the
long-running sink can show it (a one-shot command cannot be scraped).

Why not read the Delta log? A vacuum that removes nothing writes no commit, and our table
keeps no log history (`delta.logRetentionDuration` 0: the vacuum's own checkpoint drops
older commits), so the log cannot tell how many vacuums ran, nor, after a while, when the
last one did. The record is a small JSON object at `<table>/_consentry/vacuum.json`:
stored with the table (so every sink replica, on any host, reads the same one; it survives
restarts), ignored by Delta readers and by vacuum itself (paths starting with `_`).
Two vacuums at the same moment could lose one count; run one vacuum at a time (a cron job).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

RECORD_DIR = "_consentry"
RECORD_NAME = "vacuum.json"


@dataclass(frozen=True)
class VacuumRecord:
    runs: int  # every run, including those that found nothing to remove
    last_ended_at_us: int
    last_files_removed: int
    last_version: int


def next_record(previous: VacuumRecord | None, files_removed: int, version: int, ended_at_us: int) -> VacuumRecord:
    runs = (previous.runs if previous is not None else 0) + 1
    return VacuumRecord(runs, ended_at_us, files_removed, version)


def encode_record(record: VacuumRecord) -> bytes:
    return orjson.dumps(asdict(record))


def decode_record(raw: bytes) -> VacuumRecord | None:
    """None for anything unreadable: a damaged record must not stop the sink."""
    try:
        obj = orjson.loads(raw)
        return VacuumRecord(int(obj["runs"]), int(obj["last_ended_at_us"]), int(obj["last_files_removed"]), int(obj["last_version"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
