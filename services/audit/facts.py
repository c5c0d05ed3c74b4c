"""What each source record says in the audit trail: ids, times, counts, offsets, versions only
(never post text, an objection's free-text reason, an operator's client address or options)."""

from __future__ import annotations

from typing import Any

import orjson

from consentry.domain import audit as A
from consentry.domain.model import Invalid
from consentry.timeutil import parse_rfc3339
from consentry.wire import parse_drop_count, parse_objection

Fact = dict[str, Any]


def received(value: bytes | None, partition: int, offset: int) -> Fact | None:
    event = parse_objection(value)
    if type(event) is Invalid:
        return None
    return {
        "fact": A.RECEIVED, "user_id": event.user_id, "objection_id": event.objection_id, "kind": str(event.kind),
        "channel": str(event.channel), "at_us": event.received_at_us, "partition": partition, "offset": offset,
    }


def receipt(value: bytes | None, partition: int, offset: int) -> Fact | None:
    """`enforced` or `purged`; a purged receipt's Delta version and `trained_on_runs` where the
    sink gives them (the lineage work adds the runs; absent, the record says nothing of runs)."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("type") not in (A.ENFORCED, A.PURGED):
        return None
    user_id, ids, at_us = obj.get("user_id"), obj.get("objection_ids"), parse_rfc3339(obj.get("at"))
    if type(user_id) is not str or type(ids) is not list or not all(type(i) is str for i in ids) or at_us is None:
        return None
    fact: Fact = {"fact": obj["type"], "user_id": user_id, "objection_ids": ids, "at_us": at_us, "receipt_partition": partition, "receipt_offset": offset}
    if obj["type"] == A.PURGED:
        for key in ("rows_purged", "version"):
            if type(obj.get(key)) is int:
                fact[key] = obj[key]
        runs = obj.get("trained_on_runs")
        if type(runs) is list and all(type(r) is str for r in runs):
            fact["trained_on_runs"] = sorted(set(runs))
        enforced_at = parse_rfc3339(obj.get("enforced_at"))
        if enforced_at is not None:
            fact["enforced_at_us"] = enforced_at
    return fact


def admin_action(value: bytes | None) -> Fact | None:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    at_us = parse_rfc3339(obj.get("at")) if type(obj) is dict else None
    if at_us is None or not all(type(obj.get(k)) is str for k in ("action_id", "action", "phase", "actor")):
        return None
    given = obj.get("counts")
    counts = {k: v for k, v in given.items() if type(v) is int} if type(given) is dict else {}
    return {"fact": A.ADMIN, "user_id": A.TABLE_KEY, "action_id": obj["action_id"], "action": obj["action"], "phase": obj["phase"],
            "actor": obj["actor"], "at_us": at_us, "counts": counts}


def dropped(value: bytes | None) -> Fact | None:
    parsed = parse_drop_count(value)
    if type(parsed) is Invalid:
        return None
    user_id, day, reason, count, at_us = parsed
    return {"fact": A.DROPPED, "user_id": user_id, "day": day, "reason": reason, "count": count, "at_us": at_us}


def run_read(value: bytes | None) -> Fact | None:
    """A lineage record: {"run_id", "version", "read_at", "rows", "table"} (the table's URI is left out)."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    at_us = parse_rfc3339(obj.get("read_at")) if type(obj) is dict else None
    if at_us is None or type(obj.get("run_id")) is not str or type(obj.get("version")) is not int:
        return None
    fact = {"fact": A.RUN_READ, "user_id": A.TABLE_KEY, "run_id": obj["run_id"], "version": obj["version"], "at_us": at_us}
    if type(obj.get("rows")) is int:
        fact["rows"] = obj["rows"]
    return fact


def vacuumed(record: dict[str, Any]) -> Fact:
    return {"fact": A.VACUUMED, "user_id": A.TABLE_KEY, "runs": record["runs"], "files_removed": record["last_files_removed"],
            "version": record["last_version"], "at_us": record["last_ended_at_us"]}


def reconciled(record: dict[str, Any]) -> Fact:
    return {"fact": A.RECONCILED, "user_id": A.TABLE_KEY, "runs": record["runs"], "users": record["last_users"],
            "rows_scanned": record["last_rows_scanned"], "rows_purged": record["last_rows_purged"], "at_us": record["last_ended_at_us"]}
