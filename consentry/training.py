"""The reader API: how a training run reads the training store, and is recorded doing so.

    from consentry.training import open_snapshot

    snapshot = open_snapshot("run-2026-11-30")
    dataset = snapshot.to_pyarrow_dataset()  # exactly the Delta version the lineage record names

`open_snapshot(run_id)` pins the table's latest version and publishes a lineage record
(`{"run_id", "version", "read_at", "rows", "table", "committed_at"}`, keyed by run_id) on
`consentry.lineage`, and returns only once the broker acknowledged it: no record, no snapshot
(fail closed). `consentry snapshot RUN_ID` does the same and prints the version and the files
to read, for trainers in other languages.

At each purge the sink names the runs that read a version still holding the purged rows
(consentry.domain.lineage). It reads the lineage records published before its delete was
committed; a snapshot pinned before that delete but recorded after it would be missed, so once
its record is acknowledged the snapshot looks at the commits after its version: if one is a
delete (a purge, a reconciliation), it pins the new latest version and records it again (the
first record then names a version the run never read: over-counting, the safe side).

A run_id opened again records another read: each open pins the latest version then, and the
run counts once per user whichever of its reads held that user's rows.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field

from consentry.domain.lineage import RunRead
from consentry.domain.model import identifier_problem
from consentry.settings import CommonSettings
from consentry.timeutil import format_rfc3339, now_us

log = logging.getLogger(__name__)

REPIN_ATTEMPTS = 5  # deletes racing the open this many times in a row: give up (fail closed)


class ReaderSettings(CommonSettings):
    training_store_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRAINING_STORE_URI", "training_store_uri"),
        description="The Delta table; default $CONSENTRY_DATA_DIR/training.",
    )

    @property
    def store_uri(self) -> str:
        return self.training_store_uri or str((self.data_dir / "training").resolve())


class LineageNotRecorded(RuntimeError):
    """The lineage record was not acknowledged: the snapshot is not opened."""


def table_id(uri: str) -> str:
    """The table's URI as lineage records name it: a local path made absolute."""
    if "://" in uri and not uri.startswith("file://"):
        return uri.rstrip("/")
    return str(Path(uri.removeprefix("file://")).resolve())


@dataclass(frozen=True)
class Snapshot:
    """A training run's view of the table: one Delta version, recorded on `consentry.lineage`."""

    run_id: str
    version: int
    read_at: datetime
    rows: int
    uri: str
    table: Any  # a deltalake.DeltaTable loaded at `version`

    def to_pyarrow_dataset(self) -> Any:
        return self.table.to_pyarrow_dataset()

    def to_pyarrow_table(self, columns: list[str] | None = None) -> Any:
        return self.table.to_pyarrow_dataset().to_table(columns=columns)

    def file_uris(self) -> list[str]:
        """The Parquet files of this version (for readers other than pyarrow)."""
        return list(self.table.file_uris())

    def describe(self) -> dict[str, Any]:
        """What `consentry snapshot` prints."""
        return {
            "run_id": self.run_id,
            "version": self.version,
            "read_at": format_rfc3339(int(self.read_at.timestamp() * 1_000_000)),
            "rows": self.rows,
            "table": self.uri,
            "files": self.file_uris(),
        }


def _pin(uri: str, storage_options: dict[str, str] | None) -> tuple[Any, int, int, int]:
    """The latest version: (table at it, version, its commit time in µs, its rows)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=storage_options)
    version = table.version()
    # history() of a table loaded at an older version mislabels commits (delta-rs 1.6): read it at the latest.
    latest = table.history(1)[0]
    if latest.get("version") != version:
        raise RuntimeError(f"the Delta log of {uri} did not name version {version} as its latest commit")
    rows = pa.table(table.get_add_actions(flatten=True)).column("num_records").to_pylist()
    return table, version, int(latest["timestamp"]) * 1000, sum(int(n or 0) for n in rows)


def _deleted_since(uri: str, storage_options: dict[str, str] | None, version: int) -> bool:
    """A delete was committed after `version` (or the log no longer says what was)."""
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=storage_options)
    newer = table.version() - version
    if newer <= 0:
        return False
    commits = [c for c in table.history(newer) if c.get("version", -1) > version]
    return len(commits) < newer or any(c.get("operation") == "DELETE" for c in commits)


async def _publish(settings: CommonSettings, read: RunRead) -> None:
    from aiokafka import AIOKafkaProducer

    from consentry.kafka import producer_options
    from consentry.wire import encode_run_read

    producer = AIOKafkaProducer(**producer_options(settings), client_id="consentry-reader")
    try:
        await producer.start()
        await producer.send_and_wait(settings.topics.lineage, encode_run_read(read), key=read.run_id.encode())
    finally:
        await producer.stop()


def _settings(store_uri: str | None, bootstrap: str | None) -> ReaderSettings:
    overrides: dict[str, Any] = {}
    if store_uri is not None:
        overrides["training_store_uri"] = store_uri
    if bootstrap is not None:
        overrides["kafka_bootstrap_servers"] = bootstrap
    return ReaderSettings(**overrides)


def open_snapshot(
    run_id: str,
    *,
    store_uri: str | None = None,
    storage_options: dict[str, str] | None = None,
    bootstrap: str | None = None,
    settings: CommonSettings | None = None,
    timeout_s: float = 30.0,
) -> Snapshot:
    """Pin the table's latest version for `run_id` and record it on `consentry.lineage`; return
    once the broker acknowledged the record. Raises ValueError for a run_id that is not a
    canonical identifier and LineageNotRecorded when the record was not acknowledged.
    Defaults come from the environment (TRAINING_STORE_URI, KAFKA_BOOTSTRAP_SERVERS, ...).
    Synchronous: from a coroutine, call it in a thread (`asyncio.to_thread`)."""
    problem = identifier_problem(run_id) if isinstance(run_id, str) else "must be a string"
    if problem is not None:
        raise ValueError(f"run_id {problem}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop in this thread: as expected
    else:
        raise RuntimeError("open_snapshot is synchronous: from a coroutine, call it with asyncio.to_thread")
    reader = _settings(store_uri, bootstrap)
    settings = settings or reader
    uri = store_uri or reader.store_uri
    for _ in range(REPIN_ATTEMPTS):
        table, version, committed_us, rows = _pin(uri, storage_options)
        read_at = now_us()
        read = RunRead(run_id, version, committed_us, read_at, rows, table_id(uri))
        try:
            asyncio.run(asyncio.wait_for(_publish(settings, read), timeout_s))
        except Exception as exc:
            log.error("run %s: the lineage record of version %d was not acknowledged (%s): no snapshot", run_id, version, type(exc).__name__)
            raise LineageNotRecorded(f"the lineage record for run {run_id!r} was not acknowledged by the broker: {exc!r}") from exc
        if not _deleted_since(uri, storage_options, version):
            return Snapshot(run_id, version, datetime.fromtimestamp(read_at / 1e6, UTC), rows, table_id(uri), table)
        log.info("run %s: a delete was committed after version %d while it was recorded: pinning the latest version again", run_id, version)
    raise LineageNotRecorded(f"run {run_id!r}: deletes kept landing while the snapshot was recorded ({REPIN_ATTEMPTS} attempts)")


__all__ = ["LineageNotRecorded", "ReaderSettings", "Snapshot", "open_snapshot", "table_id"]
