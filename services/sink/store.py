"""The training store: one interface, a Delta Lake table in production and an in-memory
twin for fast tests of the sink's logic (tests/unit/test_store.py runs the same tests on both).
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from consentry.fencing import LEASE
from consentry.partitioning import CLUSTERS, user_hash
from consentry.timeutil import format_rfc3339, now_us, parse_rfc3339
from services.sink import metrics
from services.sink import reconcile_record
from services.sink.reconcile_record import ReconcileRecord
from services.sink.vacuum_record import RECORD_DIR, RECORD_NAME, VacuumRecord, decode_record, encode_record, next_record

log = logging.getLogger(__name__)

UTC_US = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        pa.field("post_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("created_at", UTC_US, nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("lang", pa.string()),
        pa.field("country", pa.string()),
        pa.field("ingested_at", UTC_US, nullable=False),
        # Derived from the user (consentry.partitioning.bucket_of), the table's partition column:
        # a purge, a de-duplication and a sink's commit touch only the buckets of their users.
        pa.field("bucket", pa.int32(), nullable=False),
        # Derived from the user too (consentry.partitioning.cluster_of): rows are sorted by it
        # inside a bucket and the files carry its min/max, so a purge reads and rewrites only
        # the files whose range holds its users (a range of a hash, no id).
        pa.field("cluster", pa.int32(), nullable=False),
    ]
)
PARTITION_BY = ["bucket"]
CLUSTER = "cluster"
# The bucket count is fixed when the table is created (a row's bucket never changes); it is
# a table property, so every sink and command agrees with the table, whatever its settings.
BUCKETS_PROPERTY = "consentry.bucketCount"
DEFAULT_BUCKETS = 64
MIGRATE_COMMAND = "consentry migrate-store"


class LayoutError(RuntimeError):
    """The table is not in the bucket layout, or lacks its cluster column (written by a release before it)."""


# The size of the table's files (the table property delta.targetFileSize, fixed when the table
# is created; delta-rs writes, deletes' rewrites and compactions follow it). A purge rewrites
# the files holding its users: its cost per user is about one file, whatever the table's size.
# Smaller files: cheaper purges, more files in the log and for readers to open.
FILE_SIZE_PROPERTY = "delta.targetFileSize"
DEFAULT_FILE_BYTES = 1 << 20

# Table properties that make a purge physical once vacuumed:
# - no column statistics on user_id or text, so neither is spelled into _delta_log (statistics
#   only on the timestamps and `cluster`: the log holds ranges of a hash, never an id);
# - no log retention: the next checkpoint drops the commits (and their delete predicates),
#   so time travel cannot reach purged rows;
# - checkpoints remember the files deletes removed (tombstones: paths only) for a week:
#   delta-rs checkpoints every 100 commits by itself and drops the log before, and a tombstone
#   it forgot is a purged file the next vacuum no longer knows (vacuum removes tombstoned files
#   at once whatever this says, `retention_hours=0`);
# - no change data feed (it would keep deleted rows).
TABLE_CONFIGURATION = {
    "delta.dataSkippingStatsColumns": "created_at,ingested_at,cluster",
    "delta.logRetentionDuration": "interval 0 seconds",
    "delta.deletedFileRetentionDuration": "interval 1 hour",
    "delta.enableChangeDataFeed": "false",
}


ORPHAN_GRACE_HOURS = 1

# Memory a compaction's sort may take before it spills to disk (DataFusion's pool): the sink's
# memory must not follow the size of a bucket.
SORT_MEMORY_BYTES = 256 << 20
# A bucket is sorted again once a purge of one of its users would read more than this share of
# its rows (and more than two files' worth): the files the flushes wrote since its last sort.
# Each sort rewrites the bucket, so a row is rewritten about once per 1/8 growth of its bucket.
UNSORTED_SHARE = 1 / 8


def unclustered_buckets(add_actions: pa.Table, file_bytes: int) -> list[int]:
    """The buckets worth sorting again, from the live files' metadata (delta-rs'
    get_add_actions(flatten=True)): in each, the rows a one-user purge reads are those of the
    files whose [min, max] of `cluster` holds its value: for a uniform hash, a file's rows times
    the share of the range it spans (a file without statistics spans all of it)."""
    if add_actions.num_rows == 0:
        return []
    low = add_actions.column(f"min.{CLUSTER}").to_pylist() if f"min.{CLUSTER}" in add_actions.column_names else [None] * add_actions.num_rows
    high = add_actions.column(f"max.{CLUSTER}").to_pylist() if f"max.{CLUSTER}" in add_actions.column_names else [None] * add_actions.num_rows
    per_bucket: dict[int, list[float]] = {}  # bucket -> [rows, bytes, rows a one-user purge reads]
    for bucket, rows, size, lo, hi in zip(add_actions.column("partition.bucket").to_pylist(), add_actions.column("num_records").to_pylist(),
                                          add_actions.column("size_bytes").to_pylist(), low, high, strict=True):
        span = CLUSTERS if lo is None or hi is None else hi - lo + 1
        figures = per_bucket.setdefault(int(bucket), [0.0, 0.0, 0.0])
        figures[0] += rows or 0
        figures[1] += size or 0
        figures[2] += (rows or 0) * span / CLUSTERS
    chosen = []
    for bucket, (rows, size, read) in sorted(per_bucket.items()):
        file_rows = file_bytes * rows / size if size else rows
        if read > max(2 * file_rows, rows * UNSORTED_SHARE):
            chosen.append(bucket)
    return chosen

# A commit overtaken by another writer's (a reconciliation pass, another sink replica) fails
# with delta-rs' CommitFailedError, and a read overtaken by a vacuum finds a file of its snapshot
# gone; the operation is done again on a fresh snapshot, this many times at most, with a
# growing, jittered pause.
COMMIT_ATTEMPTS = 12
T = TypeVar("T")


@dataclass(frozen=True)
class VacuumResult:
    files_removed: int
    version: int


@dataclass(frozen=True)
class Purged:
    """What one purge commit did (`TrainingStore.purge_detailed`)."""

    removed: dict[str, list[str]]  # the post_ids removed, per user
    version: int | None  # the delete's Delta version; None: nothing found, no commit
    first_ingested_us: dict[str, int]  # per user, the earliest `ingested_at` of the rows removed (lineage)


@dataclass(frozen=True)
class CompactResult:
    files_removed: int  # small files rewritten (removed from the table; the next vacuum deletes them)
    files_added: int
    version: int


@dataclass(frozen=True)
class TableStats:
    version: int
    live_bytes: int  # sum of the live files' sizes (the table's add actions)
    live_files: int


def rows_to_arrow(rows: list[dict[str, Any]], buckets: int = DEFAULT_BUCKETS) -> pa.Table:
    """Training messages (timestamps as RFC 3339 strings) to the store's Arrow schema."""
    # bucket_of and cluster_of, the hash computed once per user of the batch (murmur2 in Python:
    # once per row was the sink's largest cost at 30,000 posts/s, issue 16).
    known: dict[str, int] = {}
    hashes = [known[u] if (u := r["user_id"]) in known else known.setdefault(u, user_hash(u)) for r in rows]
    return pa.table(
        {
            "post_id": pa.array([r["post_id"] for r in rows], pa.string()),
            "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
            "created_at": pa.array([r["created_at"] for r in rows], pa.string()).cast(UTC_US),
            "text": pa.array([r["text"] for r in rows], pa.string()),
            "lang": pa.array([r.get("lang") for r in rows], pa.string()),
            "country": pa.array([r.get("country") for r in rows], pa.string()),
            "ingested_at": pa.array([r["ingested_at"] for r in rows], pa.string()).cast(UTC_US),
            "bucket": pa.array([h % buckets for h in hashes], pa.int32()),
            "cluster": pa.array([h >> 15 for h in hashes], pa.int32()),
        },
        schema=SCHEMA,
    )


Positions = Mapping[str, int]  # stream (topic and partition) -> next offset to apply


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


# DataFusion prunes files by min/max only through IN lists of fewer than 20 values (longer
# ones are not rewritten into comparisons): a bucket's cluster values go in lists of 16.
_IN_LIST = 16
# The de-duplication look-up matches the post_ids it reads against the batch's in runs of this
# many (memory: a few MB of ids, whatever the table's size).
_LOOKUP_ROWS = 1 << 17
# A bucket with more cluster values than this is read whole: a predicate that long costs
# more to evaluate against every file than the few files it would skip.
_MAX_CLUSTERS = 256


def placement_predicate(users: Iterable[str], buckets: int) -> str:
    """SQL selecting the files that may hold these users' rows: their buckets (partitions, exact)
    and, inside each, their cluster values (files whose min/max cannot hold one are skipped).
    It names numbers only, never an id."""
    by_bucket: dict[int, set[int]] = {}
    for user in users:
        h = user_hash(user)
        by_bucket.setdefault(h % buckets, set()).add(h >> 15)
    terms = []
    for bucket, clusters in sorted(by_bucket.items()):
        if len(clusters) > _MAX_CLUSTERS:
            terms.append(f"bucket = {bucket}")
            continue
        values = sorted(clusters)
        lists = " OR ".join(f"{CLUSTER} IN ({', '.join(map(str, values[i:i + _IN_LIST]))})" for i in range(0, len(values), _IN_LIST))
        terms.append(f"(bucket = {bucket} AND ({lists}))")
    return "(" + " OR ".join(terms) + ")"


def placement(users: Iterable[str], buckets: int) -> dict[int, list[int]]:
    """bucket -> the sorted cluster values of these users in it."""
    by_bucket: dict[int, set[int]] = {}
    for user in users:
        h = user_hash(user)
        by_bucket.setdefault(h % buckets, set()).add(h >> 15)
    return {bucket: sorted(clusters) for bucket, clusters in by_bucket.items()}


def files_for_placement(add_actions: pa.Table, wanted: Mapping[int, list[int]]) -> list[str]:
    """The live files (paths, from delta-rs' get_add_actions(flatten=True)) that may hold rows of
    `wanted` (`placement`): in its buckets, those whose [min, max] of `cluster` holds one of the
    bucket's values (a file without statistics may hold any). The selection placement_predicate
    makes, from the log's metadata in one pass: delta-rs' own (to_pyarrow_dataset with a
    predicate) took ~0.7 ms per live file, the bulk of a flush's look-up on thousands of files."""
    from bisect import bisect_left

    if add_actions.num_rows == 0 or not wanted:
        return []
    names = add_actions.column_names
    none = [None] * add_actions.num_rows
    low = add_actions.column(f"min.{CLUSTER}").to_pylist() if f"min.{CLUSTER}" in names else none
    high = add_actions.column(f"max.{CLUSTER}").to_pylist() if f"max.{CLUSTER}" in names else none
    chosen = []
    for path, bucket, lo, hi in zip(add_actions.column("path").to_pylist(), add_actions.column("partition.bucket").to_pylist(), low, high, strict=True):
        clusters = wanted.get(int(bucket))
        if clusters is None:
            continue
        if lo is None or hi is None:
            chosen.append(path)
            continue
        i = bisect_left(clusters, lo)
        if i < len(clusters) and clusters[i] <= hi:
            chosen.append(path)
    return chosen


def _positions(positions: Positions | None):  # type: ignore[no-untyped-def]
    """Delta `txn` actions (app id = stream, version = position): they name no user."""
    if not positions:
        return None
    from deltalake import CommitProperties, Transaction

    return CommitProperties(app_transactions=[Transaction(stream, position) for stream, position in positions.items()])


class TrainingStore(ABC):
    uri: str  # where the table lives (for the logs)

    @abstractmethod
    def stored_post_ids(self, rows: list[dict[str, Any]]) -> set[str]:
        """Those of these rows' post_ids the table already holds: only the post_ids of the files
        of the rows' buckets are read (a post is its user's, a user's rows are in one bucket)."""

    def purge(self, user_ids: Collection[str], positions: Positions | None = None) -> dict[str, list[str]]:
        """Delete every row of these users in one commit; return the post_ids removed, per user.
        No rows, no commit. `positions` (see `applied_position`) are recorded in that commit."""
        return self.purge_detailed(user_ids, positions).removed

    @abstractmethod
    def purge_detailed(self, user_ids: Collection[str], positions: Positions | None = None) -> Purged:
        """`purge`, with the delete's version and when the removed rows were first ingested."""

    @abstractmethod
    def append(self, rows: list[dict[str, Any]], positions: Positions | None = None) -> None:
        """Append rows in one commit, recording `positions` in it (no rows, no commit)."""

    @abstractmethod
    def record_positions(self, positions: Positions) -> None:
        """A commit that only records how far the input streams are applied."""

    @abstractmethod
    def applied_position(self, stream: str) -> int | None:
        """The last position recorded for `stream` by a commit: everything before it is in the
        table, whatever the consumer group's committed offset says."""

    @abstractmethod
    def read(self, columns: Iterable[str] | None = None, buckets: Collection[int] | None = None) -> pa.Table:
        """The current rows (of these buckets only, if given)."""

    @abstractmethod
    def scan(self, columns: list[str], batch_rows: int = 1 << 17) -> Iterator[pa.RecordBatch]:
        """The current rows, these columns only, in batches (reconciliation reads ids and
        timestamps, never the text)."""

    @abstractmethod
    def delete_posts(self, post_ids: Collection[str], created_between: tuple[int, int] | None = None) -> int:
        """Delete these posts in one commit (none found, no commit); return how many rows went.
        Reconciliation's delete: by post_id, so a row it did not examine is never touched.
        `created_between` (microseconds, inclusive): their `created_at` range, so that only
        the files whose statistics overlap it are read."""

    @abstractmethod
    def reconcile_record(self) -> ReconcileRecord | None:
        """What the reconciliation passes so far did (services.sink.reconcile_record), if any."""

    @abstractmethod
    def write_reconcile_record(self, record: ReconcileRecord) -> None: ...

    @abstractmethod
    def vacuum(self) -> VacuumResult:
        """Physically remove what purges deleted."""

    def compact(self, target_bytes: int | None = None) -> CompactResult:
        """Rewrite small files into larger ones, and re-sort the buckets whose files' cluster
        ranges overlap (a store without files: nothing). `target_bytes`: the table's own by default."""
        return CompactResult(0, 0, self.version())

    @abstractmethod
    def remove_orphans(self) -> int:
        """Remove what a crashed writer wrote but never committed, once older than
        ORPHAN_GRACE_HOURS (another sink's write in flight is younger); return how many files."""

    def release(self) -> None:
        """Drop whatever this object caches of the table between two uses (nothing by default)."""

    @abstractmethod
    def version(self) -> int: ...

    @abstractmethod
    def stats(self) -> TableStats:
        """Version and size of the live table, from metadata only (no data is read)."""

    @abstractmethod
    def vacuum_record(self) -> VacuumRecord | None:
        """What the vacuums so far left behind (services.sink.vacuum_record), if any."""


class MemoryTrainingStore(TrainingStore):
    uri = "memory"
    buckets = DEFAULT_BUCKETS

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, int] = {}
        self._version = 0
        self._vacuums: VacuumRecord | None = None
        self._reconciles: ReconcileRecord | None = None

    def stored_post_ids(self, rows: list[dict[str, Any]]) -> set[str]:
        return {row["post_id"] for row in rows if row["post_id"] in self._rows}

    def scan(self, columns: list[str], batch_rows: int = 1 << 17) -> Iterator[pa.RecordBatch]:
        yield from self.read(columns).to_batches(max_chunksize=batch_rows)

    def delete_posts(self, post_ids: Collection[str], created_between: tuple[int, int] | None = None) -> int:
        gone = [p for p in set(post_ids) if p in self._rows]
        for post_id in gone:
            del self._rows[post_id]
        if gone:
            self._version += 1
        return len(gone)

    def reconcile_record(self) -> ReconcileRecord | None:
        return self._reconciles

    def write_reconcile_record(self, record: ReconcileRecord) -> None:
        self._reconciles = record

    def purge_detailed(self, user_ids: Collection[str], positions: Positions | None = None) -> Purged:
        users = set(user_ids)
        removed: dict[str, list[str]] = {}
        first: dict[str, int] = {}
        for post_id, row in list(self._rows.items()):
            if row["user_id"] in users:
                removed.setdefault(row["user_id"], []).append(post_id)
                at = parse_rfc3339(row["ingested_at"]) or 0
                first[row["user_id"]] = min(first.get(row["user_id"], at), at)
                del self._rows[post_id]
        if removed:
            self.record_positions(positions or {})
        return Purged(removed, self._version if removed else None, first)

    def append(self, rows: list[dict[str, Any]], positions: Positions | None = None) -> None:
        if rows:
            for row in rows:
                self._rows[row["post_id"]] = row
            self.record_positions(positions or {})

    def record_positions(self, positions: Positions) -> None:
        self._positions.update(positions)
        self._version += 1

    def applied_position(self, stream: str) -> int | None:
        return self._positions.get(stream)

    def read(self, columns: Iterable[str] | None = None, buckets: Collection[int] | None = None) -> pa.Table:
        table = rows_to_arrow(list(self._rows.values()), self.buckets)
        if buckets is not None:
            table = table.filter(pc.is_in(table.column("bucket"), pa.array(sorted(buckets), pa.int32())))
        return table.select(list(columns)) if columns is not None else table

    def vacuum(self) -> VacuumResult:
        self._vacuums = next_record(self._vacuums, 0, self._version, now_us())
        return VacuumResult(0, self._version)

    def remove_orphans(self) -> int:
        return 0  # every write is its own commit: nothing is ever left uncommitted

    def version(self) -> int:
        return self._version

    def stats(self) -> TableStats:
        return TableStats(self._version, self.read().nbytes, 1 if self._rows else 0)

    def vacuum_record(self) -> VacuumRecord | None:
        return self._vacuums


def _file_vacuumed(exc: BaseException) -> bool:
    """A file of the snapshot an operation read is gone: a newer commit removed it (a compaction,
    a purge) and a vacuum deleted it at once, as it deletes every removed file (purged text must
    go). pyarrow's datasets raise FileNotFoundError; DataFusion's scans a plain error naming it."""
    text = str(exc)
    return isinstance(exc, FileNotFoundError) or "not found" in text or "Failed to fetch metadata for file" in text


class DeltaTrainingStore(TrainingStore):
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None, buckets: int = DEFAULT_BUCKETS,
                 file_bytes: int = DEFAULT_FILE_BYTES) -> None:
        """`buckets`, `file_bytes`: the bucket count and file size of a table created here; an
        existing table keeps its own."""
        from deltalake import DeltaTable

        self.uri = uri
        self._options = storage_options
        if not DeltaTable.is_deltatable(uri, storage_options=storage_options):
            try:
                DeltaTable.create(uri, SCHEMA, mode="ignore", partition_by=PARTITION_BY,
                                  configuration={**TABLE_CONFIGURATION, BUCKETS_PROPERTY: str(buckets), FILE_SIZE_PROPERTY: str(file_bytes)},
                                  storage_options=storage_options, name="training", raise_if_key_not_exists=False)
            except Exception:
                if not DeltaTable.is_deltatable(uri, storage_options=storage_options):
                    raise
        self._table = DeltaTable(uri, storage_options=storage_options)
        metadata = self._table.metadata()
        configured = metadata.configuration
        if metadata.partition_columns != PARTITION_BY or BUCKETS_PROPERTY not in configured:
            raise LayoutError(
                f"the training store at {uri} was written before the bucket layout (partitioned by {metadata.partition_columns or 'nothing'}): "
                f"its purges would read every file. Stop the sinks and run `{MIGRATE_COMMAND}` once (it rewrites the table; docs/operations.md)"
            )
        if CLUSTER not in self._table.schema().to_arrow().names:
            raise LayoutError(
                f"the training store at {uri} was written before the clustered layout (no `{CLUSTER}` column): its purges would "
                f"read every file of their users' buckets. Stop the sinks and run `{MIGRATE_COMMAND}` once (it rewrites the table; docs/operations.md)"
            )
        self.buckets = int(configured[BUCKETS_PROPERTY])
        stale = {k: v for k, v in TABLE_CONFIGURATION.items() if configured.get(k) != v}
        if stale:  # a table created by an earlier version: bring its properties up to date
            log.info("setting table properties of %s: %s", uri, stale)
            self._retrying("properties", lambda: self._fresh().alter.set_table_properties(stale))

    def _fresh(self):  # type: ignore[no-untyped-def]
        if self._table is None:  # released: the latest version, from its last checkpoint
            from deltalake import DeltaTable

            self._table = DeltaTable(self.uri, storage_options=self._options)
        else:
            self._table.update_incremental()
        return self._table

    def twin(self) -> DeltaTrainingStore:
        """Another object on the same table, for another thread (the sink's chores), holding no
        snapshot until its first operation (the layout was checked by this one)."""
        twin = object.__new__(DeltaTrainingStore)
        twin.uri, twin._options, twin.buckets, twin._table = self.uri, self._options, self.buckets, None
        return twin

    def release(self) -> None:
        """Drop the snapshot of the log this object holds (about 1 KB per live file: 10 MB for
        a table of 12,000 files); the next operation loads the latest version. For the sink's
        chores (housekeeping, reconciliation) between their runs."""
        self._table = None

    def _dataset(self, buckets: Collection[int] | None = None, predicate: str | None = None):  # type: ignore[no-untyped-def]
        """The live files of these buckets (exactly: a partition filter), or those `predicate`
        selects (by partition and statistics), or the whole table."""
        table = self._fresh()
        if predicate is not None:
            return table.to_pyarrow_dataset(file_pruning_predicate=predicate)
        if buckets is None:
            return table.to_pyarrow_dataset()
        return table.to_pyarrow_dataset(file_pruning_predicate=[("bucket", "in", sorted(buckets))])

    def _files_dataset(self, wanted: Mapping[int, list[int]]):  # type: ignore[no-untyped-def]
        """A pyarrow dataset of the live files `files_for_placement` selects, read through delta-rs'
        object store (the table's storage options; sizes known from the log: no HEAD request per
        file). Their columns as written: the partition column `bucket` is not in them."""
        import pyarrow.dataset as pds
        import pyarrow.fs as pa_fs
        from deltalake.fs import DeltaStorageHandler

        table = self._fresh()
        actions = pa.table(table.get_add_actions(flatten=True))
        paths = files_for_placement(actions, wanted)
        sizes = dict(zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(), strict=True))
        filesystem = pa_fs.PyFileSystem(DeltaStorageHandler(self.uri, self._options, {p: sizes[p] for p in paths}))
        format = pds.ParquetFileFormat(default_fragment_scan_options=pds.ParquetFragmentScanOptions(pre_buffer=True))
        schema = pa.schema([f for f in SCHEMA if f.name not in PARTITION_BY])
        return pds.FileSystemDataset([format.make_fragment(p, filesystem=filesystem) for p in paths], schema, format, filesystem)

    def stored_post_ids(self, rows: list[dict[str, Any]]) -> set[str]:
        if not rows:
            return set()
        wanted = pa.array(sorted({row["post_id"] for row in rows}), pa.string())
        # Every file that may hold the batch's users (their buckets, and there the files whose
        # cluster range holds one), whatever its created_at: a re-delivery is the same post_id
        # of the same user, and an upstream retry may carry a fresh created_at (narrowing the
        # look-up to the batch's created_at ranges stored such a post twice). In batches: memory
        # follows the post_ids in flight, not the table; the time, the files read.
        wanted_files = placement({row["user_id"] for row in rows}, self.buckets)

        def attempt() -> set[str]:
            found: set[str] = set()
            # The look-up set is hashed once per _LOOKUP_ROWS ids read, not once per file: a
            # dataset yields at least one batch per file, and with thousands of small files
            # (a flush writes one per bucket) hashing the batch's post_ids for each took most of
            # the flush (issue 16: 14 of 24 s at 1.2M rows in 2,600 files).
            pending: list[pa.Array] = []
            held = 0

            def look_up() -> None:
                ids = pa.chunked_array(pending, pa.string()).combine_chunks() if len(pending) > 1 else pending[0]
                found.update(ids.filter(pc.is_in(ids, value_set=wanted)).to_pylist())
                pending.clear()

            # Files are small (a flush writes one per bucket): more of them in flight at once.
            for batch in self._files_dataset(wanted_files).to_batches(columns=["post_id"], batch_size=1 << 16, fragment_readahead=16):
                pending.append(batch.column(0).cast(pa.string()))
                held += batch.num_rows
                if held >= _LOOKUP_ROWS:
                    look_up()
                    held = 0
            if pending:
                look_up()
            return found

        return self._retrying("dedupe", attempt)

    def _retrying(self, operation: str, attempt: Callable[[], T]) -> T:
        """Run `attempt` (which takes its own fresh snapshot) until its commit is not overtaken
        by another writer's. A failed append leaves its Parquet file uncommitted: vacuum removes
        it after ORPHAN_GRACE_HOURS, and the sink at its next start."""
        from deltalake.exceptions import CommitFailedError

        for n in range(1, COMMIT_ATTEMPTS + 1):
            # A sink frozen past its session may not commit what it decided before (consentry/fencing.py).
            LEASE.check(f"a Delta {operation} on {self.uri}")
            try:
                return attempt()
            except Exception as exc:
                if isinstance(exc, CommitFailedError):
                    overtaken = "another writer's commit"
                elif _file_vacuumed(exc):
                    overtaken = "a vacuum (a newer commit removed a file of its snapshot, and a vacuum deleted it)"
                else:
                    raise
                metrics.CONFLICTS.labels(operation).inc()
                if n == COMMIT_ATTEMPTS:
                    raise
                log.warning("%s on %s overtaken by %s (attempt %d of %d): doing it again on the new version (%s)",
                            operation, self.uri, overtaken, n, COMMIT_ATTEMPTS, (str(exc).splitlines() or [""])[0][:300])
                time.sleep(min(2.0, 0.02 * 2**n) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def purge_detailed(self, user_ids: Collection[str], positions: Positions | None = None) -> Purged:
        users = sorted(set(user_ids))
        if not users:
            return Purged({}, None, {})
        return self._retrying("purge", lambda: self._purge(users, positions))

    def _purge(self, users: list[str], positions: Positions | None) -> Purged:
        from deltalake import QueryBuilder

        table = self._fresh()
        # DataFusion scan (pyarrow's dataset filter trips on delta-rs' string_view columns).
        # The users' buckets and cluster values first: only the files whose statistics may hold
        # one of them are read, and of those only the files holding one are rewritten.
        where = f"{placement_predicate(users, self.buckets)} AND user_id IN ({_sql_list(users)})"
        reader = QueryBuilder().register("training", table).execute(f"SELECT post_id, user_id, ingested_at FROM training WHERE {where}")
        hits = pa.table(reader.read_all())
        if hits.num_rows == 0:
            return Purged({}, None, {})  # nothing stored: no commit at all
        removed: dict[str, list[str]] = {}
        first: dict[str, int] = {}
        ingested = hits.column("ingested_at").cast(UTC_US).cast(pa.int64()).to_pylist()
        for post_id, user_id, at in zip(hits.column("post_id").to_pylist(), hits.column("user_id").to_pylist(), ingested, strict=True):
            removed.setdefault(user_id, []).append(post_id)
            first[user_id] = min(first.get(user_id, at), at)
        found = sorted(removed)
        table.delete(f"{placement_predicate(found, self.buckets)} AND user_id IN ({_sql_list(found)})", commit_properties=_positions(positions))
        return Purged(removed, table.version(), first)

    def append(self, rows: list[dict[str, Any]], positions: Positions | None = None) -> None:
        from deltalake import write_deltalake

        if rows:
            # Sorted: each file a flush writes holds its bucket's rows in cluster order.
            data = rows_to_arrow(rows, self.buckets).sort_by([("bucket", "ascending"), (CLUSTER, "ascending")])
            self._retrying("append", lambda: write_deltalake(self._fresh(), data, mode="append", commit_properties=_positions(positions)))

    def record_positions(self, positions: Positions) -> None:
        from deltalake import write_deltalake

        # An append of no rows: a commit with the positions (Delta "txn" actions) and no file.
        self._retrying(
            "positions", lambda: write_deltalake(self._fresh(), SCHEMA.empty_table(), mode="append", commit_properties=_positions(positions))
        )

    def applied_position(self, stream: str) -> int | None:
        return self._fresh().transaction_version(stream)

    def read(self, columns: Iterable[str] | None = None, buckets: Collection[int] | None = None) -> pa.Table:
        return self._dataset(buckets).to_table(columns=list(columns) if columns is not None else None)

    def scan(self, columns: list[str], batch_rows: int = 1 << 17) -> Iterator[pa.RecordBatch]:
        # Parquet is columnar: only these columns' pages are read, never the text's.
        # Little read-ahead: as fast here, and a few batches in memory instead of dozens.
        dataset = self._fresh().to_pyarrow_dataset()
        yield from dataset.to_batches(columns=columns, batch_size=batch_rows, fragment_readahead=2, batch_readahead=4)

    def delete_posts(self, post_ids: Collection[str], created_between: tuple[int, int] | None = None) -> int:
        ids = sorted(set(post_ids))
        if not ids:
            return 0
        # Like a purge's, the predicate (post ids here) is in the commit until the next vacuum
        # drops the log before its checkpoint; no column statistics name a user.
        predicate = f"post_id IN ({_sql_list(ids)})"
        if created_between is not None:  # created_at has statistics: files outside are not read
            low, high = (format_rfc3339(t) for t in created_between)
            predicate = f"created_at >= '{low}' AND created_at <= '{high}' AND {predicate}"
        result = self._retrying("reconcile", lambda: self._fresh().delete(predicate))
        return int(result.get("num_deleted_rows") or 0)

    def vacuum(self) -> VacuumResult:
        """Safe while the sink runs. Files removed by commits go at once; files no commit
        references go only once they are an hour old: a younger one may be the sink's write
        in flight (deleting it would break the commit that is about to add it). A crashed
        sink's leftovers are removed by the sink itself when it restarts (`remove_orphans`)."""
        table = self._fresh()
        # Files that purges (and compactions) removed go at once: no reader may need them.
        # Their tombstones outlive them for an hour (TABLE_CONFIGURATION): count only the
        # files a vacuum before this one had not already removed.
        tombstoned = table.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False)
        removed = self._present(tombstoned)
        table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
        # Files no commit references are a crashed write's leftovers -- or a running sink's
        # write about to be committed: only those older than ORPHAN_GRACE_HOURS go.
        removed += table.vacuum(retention_hours=ORPHAN_GRACE_HOURS, dry_run=False, enforce_retention_duration=False, full=True)
        # A checkpoint, then no log before it: the purge's commit (its predicate names the
        # users) and older versions (time travel to purged rows) are gone.
        table.create_checkpoint()
        table.cleanup_metadata()
        result = VacuumResult(len(removed), table.version())
        try:
            self._write_record(next_record(self.vacuum_record(), result.files_removed, result.version, now_us()))
        except OSError:
            log.warning("vacuum done, but its record at %s/%s could not be written", self.uri, RECORD_DIR, exc_info=True)
        return result

    def _bucket_files(self, buckets: Collection[int]) -> set[str]:
        """The data files under these buckets' directories (relative paths), committed or not."""
        files = self._files()
        return {info.path for b in buckets for info in files.get_file_info_selector(f"{PARTITION_BY[0]}={b}", True, True)
                if info.path.endswith(".parquet")}

    def _delete_uncommitted(self, buckets: Collection[int], before: set[str]) -> None:
        """Delete the files that appeared in `buckets` since `before` and that no commit of the
        latest version references: what a failed commit of this process wrote there."""
        table = self._fresh()
        referenced = set(pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist())
        written = sorted(self._bucket_files(buckets) - before - referenced)
        files = self._files()
        for path in written:
            files.delete_file(path)
        if written:
            log.warning("deleted %d files a failed compaction wrote in %s (they may hold rows a purge removed meanwhile)", len(written), self.uri)

    def _present(self, paths: list[str]) -> list[str]:
        """Those of the table's files (relative paths) that are still on storage."""
        if not paths:
            return []
        from pyarrow import fs

        infos = self._files().get_file_info(paths)
        return [path for path, info in zip(paths, infos, strict=True) if info.type != fs.FileType.NotFound]

    def _files(self):  # type: ignore[no-untyped-def]
        """The table's storage (paths relative to its root) through delta-rs' own object store,
        with the same storage options and environment as the table: pyarrow's filesystems
        would take neither (an S3 endpoint, keys, region in the options). The handler itself,
        not deltalake.fs.DeltaStorageHandler: that wrapper's output streams refuse the
        pyarrow buffers they are given (deltalake 1.6.6)."""
        from deltalake._internal import DeltaFileSystemHandler

        return DeltaFileSystemHandler(self.uri, self._options)

    def compact(self, target_bytes: int | None = None, buckets: Collection[int] | None = None, exclusive: bool = False) -> CompactResult:
        """Two rewrites, one commit each, into files of about `target_bytes` (by default the
        table's file size, FILE_SIZE_PROPERTY): the buckets whose files' cluster ranges overlap
        (`unclustered_buckets`: the flushes' files each span the whole range) are sorted by
        `cluster` again (delta-rs' z-order on one column: a sort), so their files hold disjoint
        ranges; the other buckets' small files are bin-packed. The new files get statistics
        only on TABLE_CONFIGURATION's columns, like every write, so no user id enters the log;
        the files they replace are tombstoned and go with the next vacuum. A purge committed
        meanwhile makes a commit fail (it removes the same files): it is done again on the new
        version, never over the purge.

        `buckets`: only these (all by default). `exclusive`: the caller guarantees that nothing
        else writes files into them meanwhile (the sink's own buckets, its flushes held); then
        the files an attempt wrote and could not commit are deleted at once, for they hold the
        rows a purge has just removed (delta-rs does not name them: they are the new files of
        those buckets that no commit references). Otherwise they stay for the orphan grace."""
        scope = None if buckets is None else sorted(set(buckets))

        def attempt() -> CompactResult:
            from deltalake.exceptions import CommitFailedError

            table = self._fresh()
            # The table's current file size: an operator may have changed the property.
            size = target_bytes or int(table.metadata().configuration.get(FILE_SIZE_PROPERTY) or DEFAULT_FILE_BYTES)
            unsorted = [b for b in unclustered_buckets(pa.table(table.get_add_actions(flatten=True)), size) if scope is None or b in scope]
            before = self._bucket_files(scope) if exclusive and scope else None
            removed = added = 0
            try:
                if unsorted:  # done again after a conflict, they would no longer be chosen
                    figures = table.optimize.z_order([CLUSTER], partition_filters=[("bucket", "in", [str(b) for b in unsorted])],
                                                     target_size=size, max_spill_size=SORT_MEMORY_BYTES)
                    removed, added = int(figures.get("numFilesRemoved") or 0), int(figures.get("numFilesAdded") or 0)
                    log.info("sorted %d buckets of %s by cluster again: %d files into %d", len(unsorted), self.uri, removed, added)
                if scope is None:
                    rest = [("bucket", "not in", [str(b) for b in unsorted])] if unsorted else None
                else:
                    rest = [("bucket", "in", [str(b) for b in scope if b not in unsorted])] if len(scope) > len(unsorted) else None
                if scope is None or rest is not None:
                    figures = table.optimize.compact(partition_filters=rest, target_size=size)
                    removed, added = removed + int(figures.get("numFilesRemoved") or 0), added + int(figures.get("numFilesAdded") or 0)
            except CommitFailedError:
                if before is not None:
                    self._delete_uncommitted(scope or [], before)
                raise
            return CompactResult(removed, added, table.version())

        return self._retrying("compact", attempt)

    def remove_orphans(self) -> int:
        """Files no commit references and older than ORPHAN_GRACE_HOURS. Never younger ones:
        with several sinks on one table, a younger file may be another sink's write about to
        be committed (deleting it would leave that commit pointing at nothing). A crashed
        sink's recent leftovers go at a later start or vacuum; Delta readers never see them."""
        table = self._fresh()
        return len(table.vacuum(retention_hours=ORPHAN_GRACE_HOURS, dry_run=False, enforce_retention_duration=False, full=True))

    def version(self) -> int:
        return self._fresh().version()

    def stats(self) -> TableStats:
        table = self._fresh()
        sizes = pa.table(table.get_add_actions(flatten=True)).column("size_bytes")
        return TableStats(table.version(), int(pc.sum(sizes).as_py() or 0), len(sizes))

    # The records live beside the table, on its storage (local, s3, gcs...), ignored by Delta.
    def _read_file(self, name: str) -> bytes | None:
        try:
            return bytes(self._files().open_input_file(f"{RECORD_DIR}/{name}").read())
        except (OSError, pa.ArrowInvalid):
            return None

    def _write_file(self, name: str, data: bytes) -> None:
        files = self._files()
        files.create_dir(RECORD_DIR, True)
        temporary = f"{RECORD_DIR}/.{name}.tmp"
        stream = files.open_output_stream(temporary)
        stream.write(data)
        stream.close()
        files.move_file(temporary, f"{RECORD_DIR}/{name}")

    def vacuum_record(self) -> VacuumRecord | None:
        raw = self._read_file(RECORD_NAME)
        return decode_record(raw) if raw is not None else None  # None: never vacuumed (or unreadable)

    def _write_record(self, record: VacuumRecord) -> None:
        self._write_file(RECORD_NAME, encode_record(record))

    def reconcile_record(self) -> ReconcileRecord | None:
        raw = self._read_file(reconcile_record.RECORD_NAME)
        return reconcile_record.decode_record(raw) if raw is not None else None

    def write_reconcile_record(self, record: ReconcileRecord) -> None:
        self._write_file(reconcile_record.RECORD_NAME, reconcile_record.encode_record(record))


def migrate_to_buckets(uri: str, storage_options: dict[str, str] | None = None, buckets: int = DEFAULT_BUCKETS,
                       file_bytes: int = DEFAULT_FILE_BYTES) -> int:
    """Rewrite a table written before the current layout (no `bucket` partition, or no `cluster`
    column) into it: an overwrite that adds the derived columns and partitions by bucket (one
    commit), then a sort of every bucket by cluster (a second); the recorded positions are kept.
    A table in the bucket layout keeps its bucket count. Run with every sink stopped. Returns how
    many rows it holds. The old files are removed by the next `consentry vacuum`."""
    from deltalake import DeltaTable, write_deltalake

    table = DeltaTable(uri, storage_options=storage_options)
    metadata = table.metadata()
    if metadata.partition_columns == PARTITION_BY and BUCKETS_PROPERTY in metadata.configuration:
        if CLUSTER in table.schema().to_arrow().names:
            return table.to_pyarrow_dataset().count_rows()
        buckets = int(metadata.configuration[BUCKETS_PROPERTY])  # its rows stay in their buckets
    file_bytes = int(metadata.configuration.get(FILE_SIZE_PROPERTY) or file_bytes)
    old = table.to_pyarrow_dataset()
    rows = old.count_rows()

    def batches() -> Iterator[pa.RecordBatch]:  # streamed: memory does not follow the table
        for batch in old.to_batches(batch_size=1 << 16):
            hashes = [user_hash(u) for u in batch.column("user_id").cast(pa.string()).to_pylist()]
            columns = [batch.column(f.name).cast(f.type) for f in SCHEMA if f.name not in ("bucket", CLUSTER)]
            derived = [pa.array([h % buckets for h in hashes], pa.int32()), pa.array([h >> 15 for h in hashes], pa.int32())]
            yield pa.RecordBatch.from_arrays([*columns, *derived], schema=SCHEMA)

    write_deltalake(table, pa.RecordBatchReader.from_batches(SCHEMA, batches()), mode="overwrite", schema_mode="overwrite", partition_by=PARTITION_BY)
    table = DeltaTable(uri, storage_options=storage_options)
    table.alter.set_table_properties({**TABLE_CONFIGURATION, BUCKETS_PROPERTY: str(buckets), FILE_SIZE_PROPERTY: str(file_bytes)},
                                     raise_if_not_exists=False)
    # Every bucket sorted by cluster, files written with the statistics just configured.
    table = DeltaTable(uri, storage_options=storage_options)
    table.optimize.z_order([CLUSTER], target_size=file_bytes, max_spill_size=SORT_MEMORY_BYTES)
    return rows
