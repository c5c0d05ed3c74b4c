"""Reconciliation: the safety net for every leak not foreseen.

Purge markers make purges happen; nothing checks afterwards that they did. A marker lost
after `enforced` (the sink down for longer than `training.posts` keeps records, a table
restored beyond retention), a bug, an operator's manual write: whatever the cause, a pass
compares the table with the consent state itself and deletes what must not be there.

A pass:

1. notes the time `at` and reads the consent table's changelog (`consentry.consent-state`,
   compacted, one record per user) from its start to the end it has at `at`, keeping every
   user with an objection, withdrawn or not (a state record it cannot read counts as an
   objection since ever, as in ingest: fail closed);
2. scans the table's `post_id`, `user_id`, `created_at` and `ingested_at` columns in batches
   (never the text), keeps the rows of those users, and finds the rows that must not be there
   (`offending`);
3. deletes them by `post_id` in Delta commits (a row it did not examine is never touched),
   redone on a fresh snapshot when a sink commit overtakes it;
4. adds its figures to the reconciliation record beside the table (the sink shows them as
   `consentry_reconcile_*` metrics; rows purged > 0 is an alert: a leak was caught).

Which rows must not be there, once an objection's purge is due (confirmed by the sink, or
`grace` after its marker was written: a marker lost on the way is never confirmed;
consentry.domain.purge.reconcile_rules):

- every row stored before its marker, and every row stored while it lasted, must be gone
  (`margin` allows for the hosts' clocks and for a withdrawal on its way to ingest);
- every post created inside its interval [start, end), if it was withdrawn: never eligible
  (`decide`), whatever happened since.

So a purge still on its way (the marker written, not yet applied) is not taken for a leak,
and nothing is deleted that the contract keeps: posts of users who never objected, posts
stored after a withdrawal reached ingest whose `created_at` lies outside every interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition

from consentry.domain.model import OBJECT, Channel, Interval
from consentry.domain.purge import ObjectionFacts, reconcile_rules
from consentry.kafka import client_options
from consentry.patches import true_end_offsets
from consentry.timeutil import now_us, parse_rfc3339
from services.sink.reconcile_record import PassFigures, ReconcileRecord, next_record
from services.sink.settings import SinkSettings
from services.sink.store import TrainingStore

log = logging.getLogger(__name__)

DELETE_CHUNK = 50_000  # post ids per delete commit
LOGGED_USERS = 20  # users named in the log line of a pass that deleted rows (ids, never text)
SCAN_COLUMNS = ["post_id", "user_id", "created_at", "ingested_at"]
LOOKUP_ROWS_MAX = 4 << 20  # rows held at once for one lookup (about 50 bytes each: 200 MiB at most)
_NONE = pa.table({"post_id": pa.array([], pa.string()), "user_id": pa.array([], pa.string()),
                  "created_at": pa.array([], pa.timestamp("us", tz="UTC"))})


# ------------------------------------------------------------------ the consent state


def decode_purge_facts(value: bytes) -> tuple[tuple[Interval, ...], tuple[ObjectionFacts, ...]]:
    """What a pass needs of a consent state record (consentry.wire.encode_consent_state writes
    it): the intervals and, per objection, when it was received and enforced, whether purged.
    Raises on a record it cannot read."""
    obj = orjson.loads(value)
    objections = tuple(
        ObjectionFacts(_timestamp(e["received_at"]), e.get("channel") == Channel.IMPORT, _timestamp(e.get("enforced_at")), e.get("purged_at") is not None)
        for e in obj["history"]
        if e["kind"] == OBJECT
    )
    return tuple((int(i[0]), None if i[1] is None else int(i[1])) for i in obj["intervals"]), objections


_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _timestamp(value: Any) -> Any:
    """RFC 3339 to microseconds, fast for the form consentry.timeutil.format_rfc3339 writes
    (two per user, a million users a pass); None stays None."""
    if value is None:
        return None
    if type(value) is str and value.endswith("Z") and len(value) in (20, 27):
        try:
            return (datetime.fromisoformat(value[:-1]) - _EPOCH) // _MICROSECOND
        except ValueError:
            pass
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise ValueError("not an RFC 3339 timestamp")
    return parsed


@dataclass
class ObjectedUsers:
    """The users who can have rows to delete, as the consent table had them at `at_us`, as
    columns: per user one row with their purge horizon (`horizon`, the rest null) and one
    row per withdrawn objection's interval (`start`, `end`, `horizon` null)."""

    at_us: int
    users: pa.Array  # distinct user ids (the set a row's user is looked up in)
    rules: pa.Table  # user_id, start, end, horizon
    records_read: int = 0
    unreadable: int = 0

    @classmethod
    def of(cls, at_us: int, users: dict[str, tuple[tuple[Interval, ...], int | None]]) -> ObjectedUsers:
        """From {user: (withdrawn intervals, purge horizon)} (consentry.domain.purge.reconcile_rules)."""
        columns = _Columns()
        for user, (intervals, horizon) in users.items():
            columns.add(user, intervals, horizon)
        columns.seal()
        return columns.build(at_us)


class _Columns:
    def __init__(self) -> None:
        self._users: list[str] = []
        self._rule_users: list[str] = []
        self._starts: list[int | None] = []
        self._ends: list[int | None] = []
        self._horizons: list[int | None] = []
        self._chunks: list[tuple[pa.Array, pa.Table]] = []

    def add(self, user: str, intervals: tuple[Interval, ...], horizon: int | None) -> bool:
        """Keep the user if some row of theirs could be offending; say whether. `intervals`:
        the withdrawn ones whose purge is due (rows created inside go)."""
        closed = [(start, end) for start, end in intervals if end is not None]
        if not closed and horizon is None:
            return False
        self._users.append(user)
        for start, end in closed:
            self._rule_users.append(user)
            self._starts.append(start)
            self._ends.append(end)
            self._horizons.append(None)
        if horizon is not None:
            self._rule_users.append(user)
            self._starts.append(None)
            self._ends.append(None)
            self._horizons.append(horizon)
        return True

    def seal(self) -> None:
        """Turn what was added into columns (once per partition: a million users cost tens of
        MiB this way, not hundreds)."""
        self._chunks.append(
            (
                pa.array(self._users, pa.string()),
                pa.table({"user_id": pa.array(self._rule_users, pa.string()), "start": pa.array(self._starts, pa.int64()),
                          "end": pa.array(self._ends, pa.int64()), "horizon": pa.array(self._horizons, pa.int64())}),
            )
        )
        self._users, self._rule_users, self._starts, self._ends, self._horizons = [], [], [], [], []

    def build(self, at_us: int, records_read: int = 0, unreadable: int = 0) -> ObjectedUsers:
        users = pa.concat_arrays([u for u, _ in self._chunks]) if self._chunks else pa.array([], pa.string())
        rules = pa.concat_tables([t for _, t in self._chunks]) if self._chunks else pa.table(
            {name: pa.array([], pa.string() if name == "user_id" else pa.int64()) for name in ("user_id", "start", "end", "horizon")})
        return ObjectedUsers(at_us, users, rules.combine_chunks(), records_read, unreadable)


async def read_objected(settings: SinkSettings, timeout: float = 900.0) -> ObjectedUsers:
    """Read the consent table's changelog to the end it has now; one partition at a time (a
    user's records are all in their home partition, in order: the last one wins)."""
    topic = settings.topics.consent_state
    at = now_us()  # before the end offsets: a change not read was made after `at`
    grace, margin = int(settings.reconcile_grace_s * 1e6), int(settings.reconcile_margin_s * 1e6)
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ends = await true_end_offsets(client_options(settings), tps)
    columns = _Columns()
    records = unreadable = 0
    if not any(ends.values()):
        return columns.build(at)  # (an aiokafka consumer never assigned a partition may hang in stop())
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 << 20,
        client_id="consentry-reconcile",
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        for tp in tps:
            if not ends[tp]:
                continue
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            latest: dict[str, bytes | None] = {}  # the last record of each user: decoded once
            while await consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic} not read to its end within {timeout}s")
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=50_000)
                for record in batch.get(tp, ()):
                    if record.offset < ends[tp] and record.key is not None:
                        records += 1
                        latest[record.key.decode("utf-8", errors="replace")] = record.value
            for user, value in latest.items():
                if value is None:  # tombstone
                    continue
                try:
                    intervals, objections = decode_purge_facts(value)
                    horizon, closed = reconcile_rules(intervals, objections, at, grace, margin)
                except (ValueError, KeyError, TypeError, IndexError):
                    unreadable += 1
                    log.error("unreadable consent state record of a user in %s[%d]: the user counts as objected since ever",
                              topic, tp.partition)
                    horizon, closed = at - margin, ()
                columns.add(user, closed, horizon)
            latest.clear()
            columns.seal()
    finally:
        try:
            await asyncio.wait_for(consumer.stop(), 30)
        except TimeoutError:
            log.warning("the consent state reader did not stop within 30s; left to the garbage collector")
    return columns.build(at, records, unreadable)


def offending(rows: pa.Table | pa.RecordBatch, objected: ObjectedUsers) -> pa.Table:
    """The rows (post_id, user_id, created_at) that must not be in the table (see the module)."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    candidates = rows.filter(pc.is_in(rows.column("user_id"), value_set=objected.users))
    if candidates.num_rows == 0:
        return _NONE
    joined = candidates.select(SCAN_COLUMNS).join(objected.rules, keys="user_id")
    created = joined.column("created_at").cast(pa.int64())
    ingested = joined.column("ingested_at").cast(pa.int64())
    inside = pc.and_kleene(pc.greater_equal(created, joined.column("start")), pc.less(created, joined.column("end")))
    stored_before = pc.less(ingested, joined.column("horizon"))
    hits = joined.filter(pc.fill_null(pc.or_kleene(inside, stored_before), False))
    return hits.select(["post_id", "user_id", "created_at"]).group_by(["post_id", "user_id", "created_at"]).aggregate([])


@dataclass(frozen=True)
class PassResult:
    figures: PassFigures
    record: ReconcileRecord | None  # None: a dry run (nothing written)
    users_seconds: float  # reading the consent state
    scan_seconds: float
    delete_seconds: float
    offending_users: tuple[str, ...]  # for the operator's terminal (the command prints a few)
    unreadable: int


def find_offending(store: TrainingStore, objected: ObjectedUsers, batch_rows: int = 1 << 17) -> tuple[pa.Table, int]:
    """Scan the table (ids and timestamps only); return the offending rows and the rows scanned.

    Batches are looked up in chunks of at least twice as many rows as there are objected
    users (at most LOOKUP_ROWS_MAX): each lookup hashes the whole set of objected users again,
    so per file (100,000 rows) it would cost more than the scan itself."""
    chunk_rows = max(batch_rows, min(2 * len(objected.users), LOOKUP_ROWS_MAX))
    found = []
    scanned = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def look_up() -> None:
        hits = offending(pa.Table.from_batches(pending), objected)
        if hits.num_rows:
            found.append(hits)

    for batch in store.scan(SCAN_COLUMNS, batch_rows):
        scanned += batch.num_rows
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= chunk_rows:
            look_up()
            pending, pending_rows = [], 0
    if pending:
        look_up()
    if not found:
        return _NONE, scanned
    return pa.concat_tables(found), scanned


def delete_offending(store: TrainingStore, hits: pa.Table) -> int:
    """Delete the rows `offending` found, DELETE_CHUNK per commit, in created_at order: each
    commit's created_at range is narrow, so it reads only the files that overlap it."""
    hits = hits.sort_by("created_at")
    deleted = 0
    for start in range(0, hits.num_rows, DELETE_CHUNK):
        chunk = hits.slice(start, DELETE_CHUNK)
        created = chunk.column("created_at").cast(pa.int64())
        span = (pc.min(created).as_py(), pc.max(created).as_py())
        deleted += store.delete_posts(chunk.column("post_id").to_pylist(), span)
    return deleted


async def run_pass(
    settings: SinkSettings,
    store: TrainingStore,
    *,
    dry_run: bool = False,
    lock: AbstractAsyncContextManager[object] | None = None,
) -> PassResult:
    """One pass (see the module). `lock` is held around the deletes: the sink passes its
    worker lock so that its own commits never race them (another process's may, and are
    retried)."""
    started = time.monotonic()
    objected = await read_objected(settings)
    read_at = time.monotonic()
    if len(objected.users):
        hits, scanned = await asyncio.to_thread(find_offending, store, objected)
    else:
        hits, scanned = _NONE, 0
    scanned_at = time.monotonic()
    deleted = 0
    users = tuple(sorted(set(hits.column("user_id").to_pylist()))) if hits.num_rows else ()
    if hits.num_rows and not dry_run:
        async with lock or nullcontext():
            deleted = await asyncio.to_thread(delete_offending, store, hits)
    ended = time.monotonic()
    figures = PassFigures(len(objected.users), scanned, deleted if not dry_run else hits.num_rows, len(users), ended - started)
    record = None
    if not dry_run:
        record = next_record(await asyncio.to_thread(store.reconcile_record), figures, now_us())
        await asyncio.to_thread(store.write_reconcile_record, record)
    if deleted:
        log.error("reconciliation deleted %d rows of %d users that must not be in the training store: a leak was caught "
                  "(docs/operations.md, ConsentryReconcileFoundLeak); users: %s%s", deleted, len(users),
                  ", ".join(users[:LOGGED_USERS]), " ..." if len(users) > LOGGED_USERS else "")
    log.info("reconciliation pass: %d objected users (consent state read in %.1fs), %d rows scanned in %.1fs, %d rows %s",
             figures.users, read_at - started, scanned, scanned_at - read_at, figures.rows_purged,
             "would be deleted (dry run)" if dry_run else "deleted")
    return PassResult(figures, record, read_at - started, scanned_at - read_at, ended - scanned_at, users, objected.unreadable)
