"""Reconciliation: the safety net for every leak not foreseen.

Purge markers make purges happen; nothing checks afterwards that they did. A marker lost
after `enforced` (the sink down for longer than `training.posts` keeps records, a table
restored beyond retention), a bug, an operator's manual write: whatever the cause, a pass
compares the table with the consent state itself and deletes what must not be there.

A pass:

1. notes the time `at` and reads the consent table's changelog (`consentry.consent-state`,
   compacted, one record per user) from its start to the end it has at `at`, keeping every
   user with an objection interval, withdrawn or not (a state record it cannot read counts as
   an objection since ever, as in ingest: fail closed);
2. scans the table's `post_id`, `user_id`, `created_at` and `ingested_at` columns in batches
   (never the text), keeps the rows of those users, and finds the rows that must not be there
   (`offending`);
3. deletes them by `post_id` in Delta commits (a row it did not examine is never touched),
   redone on a fresh snapshot when a sink commit overtakes it;
4. adds its figures to the reconciliation record beside the table (the sink shows them as
   `consentry_reconcile_*` metrics; rows purged > 0 is an alert: a leak was caught).

Which rows must not be there, for a user with interval [start, end) (end unset: active):

- a post created inside a withdrawn objection's interval (never eligible, `decide`);
- a row ingested before an objection's end, or, while it is active, before `at`: the purge
  marker of that objection deletes every row stored before it, and ingest stores none while
  the objection is active. Ingestion times come from ingest's clock and `at` from this one's,
  and a withdrawal may be applied by ingest a moment after it was received: rows ingested
  within MARGIN of the end (or of `at`) are left to the next pass, so that a post stored
  just after a withdrawal is never taken for a leak.

What the rule never deletes: posts of users who never objected, posts created after a
withdrawal and ingested after it (eligible again), posts created before an objection and
ingested after its withdrawal (eligible: its created_at is outside every interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition

from consentry.domain.model import Interval
from consentry.patches import true_end_offsets
from consentry.timeutil import now_us
from consentry.wire import decode_intervals
from services.sink.reconcile_record import PassFigures, ReconcileRecord, next_record
from services.sink.settings import SinkSettings
from services.sink.store import TrainingStore

log = logging.getLogger(__name__)

MARGIN_US = 5 * 60 * 1_000_000  # clock skew between hosts, and a withdrawal's way to ingest
DELETE_CHUNK = 50_000  # post ids per delete commit
LOGGED_USERS = 20  # users named in the log line of a pass that deleted rows (ids, never text)
SCAN_COLUMNS = ["post_id", "user_id", "created_at", "ingested_at"]
LOOKUP_ROWS_MAX = 4 << 20  # rows held at once for one lookup (about 50 bytes each: 200 MiB at most)
FAIL_CLOSED: tuple[Interval, ...] = ((0, None),)  # an unreadable state record: objected since ever
_NONE = pa.table({"post_id": pa.array([], pa.string()), "user_id": pa.array([], pa.string()),
                  "created_at": pa.array([], pa.timestamp("us", tz="UTC"))})


@dataclass
class ObjectedUsers:
    """The users with an objection interval, as the consent table had them at `at_us`, as
    columns: one row per interval (`end` null while active)."""

    at_us: int
    users: pa.Array  # distinct user ids (the set a row's user is looked up in)
    intervals: pa.Table  # user_id, start, end
    records_read: int = 0
    unreadable: int = 0

    @classmethod
    def of(cls, at_us: int, intervals: dict[str, tuple[Interval, ...]]) -> ObjectedUsers:
        """From a mapping (tests, benchmarks); `read_objected` builds it partition by partition."""
        columns = _Columns()
        columns.add(intervals)
        return columns.build(at_us)


class _Columns:
    def __init__(self) -> None:
        self.users: list[str] = []
        self.interval_users: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int | None] = []
        self.chunks: list[tuple[pa.Array, pa.Table]] = []

    def add(self, intervals: dict[str, tuple[Interval, ...]]) -> None:
        for user, spans in intervals.items():
            self.users.append(user)
            for start, end in spans:
                self.interval_users.append(user)
                self.starts.append(start)
                self.ends.append(end)
        # As columns at once: a million users cost tens of MiB this way, not hundreds.
        self.chunks.append(
            (
                pa.array(self.users, pa.string()),
                pa.table({"user_id": pa.array(self.interval_users, pa.string()), "start": pa.array(self.starts, pa.int64()),
                          "end": pa.array(self.ends, pa.int64())}),
            )
        )
        self.users, self.interval_users, self.starts, self.ends = [], [], [], []

    def build(self, at_us: int, records_read: int = 0, unreadable: int = 0) -> ObjectedUsers:
        users = pa.concat_arrays([u for u, _ in self.chunks]) if self.chunks else pa.array([], pa.string())
        table = pa.concat_tables([t for _, t in self.chunks]) if self.chunks else pa.table(
            {"user_id": pa.array([], pa.string()), "start": pa.array([], pa.int64()), "end": pa.array([], pa.int64())})
        return ObjectedUsers(at_us, users, table.combine_chunks(), records_read, unreadable)


async def read_objected(settings: SinkSettings, timeout: float = 600.0) -> ObjectedUsers:
    """Read the consent table's changelog to the end it has now; one partition at a time (a
    user's records are all in their home partition, in order: the last one wins)."""
    topic = settings.topics.consent_state
    at = now_us()  # before the end offsets: a change not read was made after `at`
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ends = await true_end_offsets(settings.bootstrap_servers, tps)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 << 20,
        client_id="consentry-reconcile",
    )
    await consumer.start()
    columns = _Columns()
    records = unreadable = 0
    deadline = time.monotonic() + timeout
    try:
        for tp in tps:
            if not ends[tp]:
                continue
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            users: dict[str, tuple[Interval, ...]] = {}
            while await consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic} not read to its end within {timeout}s")
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=50_000)
                for record in batch.get(tp, ()):
                    if record.offset >= ends[tp] or record.key is None:
                        continue
                    records += 1
                    user = record.key.decode("utf-8", errors="replace")
                    if record.value is None:  # tombstone
                        users.pop(user, None)
                        continue
                    try:
                        spans = decode_intervals(record.value)
                    except (ValueError, KeyError, TypeError, IndexError):
                        unreadable += 1
                        log.error("unreadable consent state record in %s[%d] at offset %d: the user counts as objected",
                                  topic, tp.partition, record.offset)
                        spans = FAIL_CLOSED
                    if spans:
                        users[user] = spans
                    else:
                        users.pop(user, None)
            columns.add(users)
    finally:
        await consumer.stop()
    return columns.build(at, records, unreadable)


def offending(rows: pa.Table | pa.RecordBatch, objected: ObjectedUsers, margin_us: int = MARGIN_US) -> pa.Table:
    """The rows (post_id, user_id, created_at) that must not be in the table (see the module)."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    candidates = rows.filter(pc.is_in(rows.column("user_id"), value_set=objected.users))
    if candidates.num_rows == 0:
        return _NONE
    joined = candidates.select(["post_id", "user_id", "created_at", "ingested_at"]).join(objected.intervals, keys="user_id")
    at = objected.at_us
    created = joined.column("created_at").cast(pa.int64())
    ingested = joined.column("ingested_at").cast(pa.int64())
    start, end = joined.column("start"), joined.column("end")
    # An interval ending after `at` (a clock ahead of this one) is still active here.
    active = pc.or_(pc.is_null(end), pc.greater(pc.fill_null(end, at), at))
    closed_end = pc.if_else(active, pa.scalar(at, pa.int64()), end)
    inside = pc.and_(pc.invert(active), pc.and_(pc.greater_equal(created, start), pc.less(created, closed_end)))
    stored_before = pc.less(ingested, pc.subtract(closed_end, margin_us))
    hits = joined.filter(pc.or_(inside, stored_before)).select(["post_id", "user_id", "created_at"])
    return hits.group_by(["post_id", "user_id", "created_at"]).aggregate([])


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
