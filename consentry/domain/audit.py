"""The audit trail's rules: its facts, the hash chain that makes it tamper-evident, and the
figures of the compliance report. Pure: the audit writer (services/audit) and the readers
(consentry/audit.py) do the I/O.

A record is one JSON object, serialised canonically (sorted keys, no spaces: orjson with
OPT_SORT_KEYS does it; `canonical` here is the stdlib twin the verifier uses). Each carries
`seq` (0, 1, 2... in its partition of the audit topic) and `prev`, the SHA-256 of the previous
record's bytes in that partition (GENESIS for the first): changing, removing or inserting a
record breaks the link after it. No post text and no free-text reason ever enter a record:
ids, times, counts, offsets, versions.

What a chain without a key does not prove: someone who can write the topic and the table may
rewrite a whole suffix with fresh hashes. The last hash of each partition, published elsewhere
(the report prints them), anchors what came before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64

# The facts (a record's "fact" field).
RECEIVED = "received"  # an objection event read from `objections` (partition, offset: proof of receipt)
ENFORCED = "enforced"  # ingest's receipt: purge marker written, posts dropped from then on
PURGED = "purged"  # the sink's receipt: the Delta delete (version, rows removed, runs that read the rows)
VACUUMED = "vacuumed"  # files that held purged rows physically removed
RECONCILED = "reconciled"  # a reconciliation pass (rows of objected users found and deleted)
ADMIN = "admin"  # an operator's action (who, what, counts)
DROPPED = "dropped"  # per user, day and reason: how many posts ingest kept out of training
RUN_READ = "run_read"  # a training run read a version of the table (consentry.lineage)
FACTS = (RECEIVED, ENFORCED, PURGED, VACUUMED, RECONCILED, ADMIN, DROPPED, RUN_READ)

TABLE_KEY = ""  # the key of table-level facts: never a user_id (ids have 1 to 256 code points)


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes whose SHA-256 the next record carries (identical to orjson's OPT_SORT_KEYS
    output for the ints, strings and lists a record holds)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass
class ChainHead:
    """Where a partition's chain ends: the next record's seq and prev."""

    seq: int = 0
    prev: str = GENESIS

    def link(self, fact: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The next record of the chain (fact + seq + prev) and its bytes; advances the head."""
        record = {**fact, "seq": self.seq, "prev": self.prev}
        raw = canonical(record)
        self.seq += 1
        self.prev = digest(raw)
        return record, raw


@dataclass(frozen=True)
class Break:
    """The first broken link of a partition's chain."""

    partition: int
    position: int  # the record's offset in the topic (or its row's seq in the table)
    reason: str

    def __str__(self) -> str:
        return f"partition {self.partition}, record at {self.position}: {self.reason}"


@dataclass
class Verification:
    records: int = 0
    partitions: dict[int, str] = field(default_factory=dict)  # partition -> hash of its last record (the anchor)
    breaks: list[Break] = field(default_factory=list)  # the first break of each broken partition
    duplicates: int = 0  # records written twice, byte for byte (a retried send): not breaks

    @property
    def ok(self) -> bool:
        return not self.breaks

    def summary(self) -> str:
        if self.ok:
            twice = f" ({self.duplicates} written twice by a retried send)" if self.duplicates else ""
            return f"chain intact: {self.records} records in {len(self.partitions)} partitions{twice}"
        return "chain BROKEN: " + "; ".join(str(b) for b in self.breaks)


def verify_partition(partition: int, records: Iterable[tuple[int, bytes]], into: Verification) -> None:
    """Check one partition's records, (position, raw bytes) in order: each parses, its `seq`
    follows the previous one, its `prev` is the previous record's hash and its bytes are
    canonical (a re-serialised record would hash differently). Stops at the first break."""
    head = ChainHead()
    previous: bytes | None = None
    for position, raw in records:
        if raw == previous:
            # The same bytes again: a producer's retry without idempotence (the embedded broker's
            # case) wrote the record twice. Harmless and told apart from a change: skipped.
            into.duplicates += 1
            continue
        previous = raw
        into.records += 1
        reason = _check(raw, head)
        if reason is not None:
            into.breaks.append(Break(partition, position, reason))
            return
        head.seq += 1
        head.prev = digest(raw)
    if head.seq:
        into.partitions[partition] = head.prev


def _check(raw: bytes, head: ChainHead) -> str | None:
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if type(record) is not dict:
        return "not a JSON object"
    if record.get("seq") != head.seq:
        return f"seq is {record.get('seq')!r}, expected {head.seq} (a record removed or inserted before it)"
    if record.get("prev") != head.prev:
        return "prev is not the hash of the record before it (that record or this one was changed)"
    if canonical(record) != raw:
        return "its bytes are not the canonical form of its content (changed after it was written)"
    return None


# ----------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Window:
    from_us: int  # inclusive
    to_us: int  # exclusive


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles (None without values)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in points:
        if not ordered:
            out[f"p{p}"] = None
            continue
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n)
        out[f"p{p}"] = ordered[rank - 1]
    out["max"] = ordered[-1] if ordered else None
    return out


def day_of(us: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).strftime("%Y-%m-%d")


def report_figures(records: Iterable[Mapping[str, Any]], window: Window, now_us: int, verification: Verification | None = None) -> dict[str, Any]:
    """The compliance report's figures from the audit records (dicts as written).

    Objections are those received in the window; an objection's times to enforced and to purged
    are from its receipt to the first `enforced` / `purged` record naming its id (at any time:
    an objection of the window purged after it still counts). Times in seconds."""
    received: dict[str, Mapping[str, Any]] = {}
    enforced_at: dict[str, int] = {}
    purged_at: dict[str, int] = {}
    purges_with_rows: list[Mapping[str, Any]] = []
    withdrawn_users: dict[str, int] = {}  # user -> time of their last withdrawal
    objected_at: dict[str, int] = {}  # user -> time of their first objection (any time)
    vacuums: list[Mapping[str, Any]] = []
    reconciles: list[Mapping[str, Any]] = []
    runs: dict[str, Mapping[str, Any]] = {}
    purged_runs: dict[str, set[str]] = {}  # user -> runs that read their rows before the purge
    drops: dict[str, int] = {}
    for r in records:
        fact = r.get("fact")
        if fact == RECEIVED:
            if r.get("kind") == "object":
                objected_at[r["user_id"]] = min(objected_at.get(r["user_id"], r["at_us"]), r["at_us"])
                if window.from_us <= r["at_us"] < window.to_us:
                    received.setdefault(r["objection_id"], r)
            else:
                withdrawn_users[r["user_id"]] = max(withdrawn_users.get(r["user_id"], 0), r["at_us"])
        elif fact == ENFORCED:
            for oid in r.get("objection_ids", ()):
                enforced_at.setdefault(oid, r["at_us"])
        elif fact == PURGED:
            for oid in r.get("objection_ids", ()):
                purged_at.setdefault(oid, r["at_us"])
            if r.get("rows_purged", 1):  # a re-confirmation (no count) may have removed rows: counted
                purges_with_rows.append(r)
            if "trained_on_runs" in r or r.get("rows_purged") == 0:  # the sink said which runs (or that there were no rows)
                purged_runs.setdefault(r["user_id"], set()).update(r.get("trained_on_runs", ()))
        elif fact == VACUUMED:
            vacuums.append(r)
        elif fact == RECONCILED:
            reconciles.append(r)
        elif fact == RUN_READ:
            runs.setdefault(r["run_id"], r)
        elif fact == DROPPED:
            if window.from_us <= r["at_us"] < window.to_us:
                drops[r["reason"]] = drops.get(r["reason"], 0) + r["count"]

    by_channel_day: dict[str, dict[str, int]] = {}
    to_enforced: list[float] = []
    to_purged: list[float] = []
    not_purged: list[dict[str, Any]] = []
    for oid, r in sorted(received.items(), key=lambda item: (item[1]["at_us"], item[0])):
        day = by_channel_day.setdefault(day_of(r["at_us"]), {})
        day[r["channel"]] = day.get(r["channel"], 0) + 1
        if oid in enforced_at:
            to_enforced.append(max(0, enforced_at[oid] - r["at_us"]) / 1e6)
        if oid in purged_at:
            to_purged.append(max(0, purged_at[oid] - r["at_us"]) / 1e6)
        elif withdrawn_users.get(r["user_id"], 0) <= r["at_us"]:  # a withdrawn objection needs no purge
            not_purged.append({"objection_id": oid, "user_id": r["user_id"], "received_at_us": r["at_us"], "age_s": max(0, now_us - r["at_us"]) / 1e6})

    # A purge that removed rows after the last vacuum ended still has them in files on disk.
    last_vacuum_at = max((v["at_us"] for v in vacuums), default=-1)
    unvacuumed = [r for r in purges_with_rows if r["at_us"] > last_vacuum_at]
    last_reconcile = max(reconciles, key=lambda r: r["at_us"], default=None)

    # A run read data of a user who objected later: the sink's trained_on_runs on their purge
    # receipt says which (exact); without it (no purge yet, or a sink before the lineage work)
    # every run that read before their first objection counts, erring towards too many.
    later: dict[str, list[str]] = {}
    for user, first in objected_at.items():
        named = purged_runs.get(user)
        for run_id, run in runs.items():
            if (named is not None and run_id in named) or (named is None and run["at_us"] < first):
                later.setdefault(run_id, []).append(user)
    return {
        "window": {"from_us": window.from_us, "to_us": window.to_us},
        "generated_at_us": now_us,
        "objections_received": len(received),
        "objections_by_day_and_channel": by_channel_day,
        "time_to_enforced_s": percentiles(to_enforced) | {"count": len(to_enforced), "values": to_enforced},
        "time_to_purged_s": percentiles(to_purged) | {"count": len(to_purged), "values": to_purged},
        "not_yet_purged": not_purged,
        "reconciliation": {
            "passes": len(reconciles),
            "last_at_us": last_reconcile["at_us"] if last_reconcile else None,
            # Rows of objected users the last pass found (and deleted): each a leak caught. Must be 0.
            "rows_found_last_pass": last_reconcile.get("rows_purged", 0) if last_reconcile else None,
            "rows_deleted_total": sum(r.get("rows_purged", 0) for r in reconciles),
        },
        "purges_not_yet_vacuumed": len(unvacuumed),
        "last_vacuum_at_us": last_vacuum_at if vacuums else None,
        "runs_with_users_who_objected_later": {run: sorted(users) for run, users in sorted(later.items())},
        "posts_dropped_by_reason": drops,
        "chain": None if verification is None else {
            "ok": verification.ok, "records": verification.records, "summary": verification.summary(),
            "anchors": {str(p): h for p, h in sorted(verification.partitions.items())},
        },
    }

