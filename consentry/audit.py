"""The audit trail's storage: the Delta `audit` table and the `consentry.audit` topic, shared by
its writer (services/audit), the gateway's evidence endpoint and the `consentry audit` and
`consentry report` commands. The rules (records, chain, figures) are consentry.domain.audit's.

The table is a projection of the topic: one row per record, its canonical bytes in `record`
and their SHA-256 in `hash`, with the columns a reader filters on (partition, offset, seq,
fact, user_id, at). Either can be verified on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consentry.domain.audit import TABLE_KEY, Verification, digest, verify_partition

UTC_US = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),  # in the audit topic
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("fact", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),  # "" for table-level facts
        pa.field("at", UTC_US, nullable=False),
        pa.field("record", pa.string(), nullable=False),  # the canonical bytes the chain hashes
        pa.field("hash", pa.string(), nullable=False),
    ]
)
# Evidence is kept: no log retention tricks here (unlike the training store), and no stats on
# anything but the time and the partition.
TABLE_CONFIGURATION = {"delta.dataSkippingStatsColumns": "partition,offset,seq,at"}


def default_audit_uri(training_store_uri: str) -> str:
    """Beside the training store: `<TRAINING_STORE_URI>/../audit`."""
    if "://" in training_store_uri:
        return training_store_uri.rstrip("/").rsplit("/", 1)[0] + "/audit"
    return str(Path(training_store_uri).resolve().parent / "audit")


def row_of(partition: int, offset: int, record: Mapping[str, Any], raw: bytes) -> dict[str, Any]:
    return {
        "partition": partition, "offset": offset, "seq": record["seq"], "fact": record["fact"],
        "user_id": record.get("user_id", TABLE_KEY), "at": record["at_us"], "record": raw.decode(), "hash": digest(raw),
    }


class AuditTable:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None, create: bool = True) -> None:
        from deltalake import DeltaTable

        self.uri = uri
        self._options = storage_options
        if create and not DeltaTable.is_deltatable(uri, storage_options=storage_options):
            try:
                DeltaTable.create(uri, SCHEMA, mode="ignore", configuration=TABLE_CONFIGURATION, storage_options=storage_options, name="audit")
            except Exception:
                if not DeltaTable.is_deltatable(uri, storage_options=storage_options):
                    raise
        self._table = DeltaTable(uri, storage_options=storage_options)

    def _fresh(self):  # type: ignore[no-untyped-def]
        self._table.update_incremental()
        return self._table

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        from deltalake import write_deltalake

        if not rows:
            return
        columns = {name: [r[name] for r in rows] for name in SCHEMA.names}
        write_deltalake(self._fresh(), pa.Table.from_pydict(columns, schema=SCHEMA), mode="append")

    def next_offsets(self) -> dict[int, int]:
        """partition -> the audit topic offset after the last record the table holds."""
        table = self._fresh().to_pyarrow_dataset().to_table(columns=["partition", "offset"])
        if not table.num_rows:
            return {}
        grouped = table.group_by("partition").aggregate([("offset", "max")])
        return {p: o + 1 for p, o in zip(grouped.column("partition").to_pylist(), grouped.column("offset_max").to_pylist())}

    def rows(self, user_id: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        dataset = self._fresh().to_pyarrow_dataset()
        where = (pc.field("user_id") == user_id) if user_id is not None else None
        table = dataset.to_table(filter=where, columns=list(columns) if columns else None)
        return table.sort_by([("partition", "ascending"), ("seq", "ascending")]) if "seq" in table.column_names else table

    def records(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """The records (parsed), each with its proof of place: partition, offset, hash."""
        out = []
        for row in self.rows(user_id, ["partition", "offset", "seq", "record", "hash"]).to_pylist():
            record = orjson.loads(row["record"])
            record["_partition"], record["_offset"], record["_hash"] = row["partition"], row["offset"], row["hash"]
            out.append(record)
        return out

    def verify(self) -> Verification:
        """The chain as the table holds it: every row's hash is its record's, the columns say what
        the record says, and the records link up (breaks named by partition and seq)."""
        result = Verification()
        table = self.rows(columns=["partition", "offset", "seq", "fact", "user_id", "record", "hash"])
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for row in table.to_pylist():
            by_partition.setdefault(row["partition"], []).append(row)
        for partition, rows in sorted(by_partition.items()):
            verify_partition(partition, _checked_rows(partition, rows, result), result)
        return result


def _checked_rows(partition: int, rows: list[dict[str, Any]], result: Verification) -> Iterable[tuple[int, bytes]]:
    from consentry.domain.audit import Break

    for row in rows:
        raw = row["record"].encode()
        if digest(raw) != row["hash"]:
            result.breaks.append(Break(partition, row["seq"], "the row's record does not hash to the row's hash (changed in the table)"))
            return
        try:
            record = json.loads(raw)
            same = record.get("fact") == row["fact"] and record.get("user_id", TABLE_KEY) == row["user_id"] and record.get("seq") == row["seq"]
        except ValueError:
            same = True  # verify_partition names it
        if not same:
            result.breaks.append(Break(partition, row["seq"], "the row's columns differ from its record (changed in the table)"))
            return
        yield row["seq"], raw


async def read_topic(connection: Mapping[str, Any], topic: str, timeout: float = 30.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of `topic`, (offset, value) per partition, up to the end offsets it had when called."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**connection, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50, client_id="consentry-audit-reader")
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata of every topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        from consentry.patches import true_end_offsets

        ends = await true_end_offsets(connection, partitions)  # ListOffsets is wrong on Tansu 0.6.0
        from consentry.kafka import records_until

        out: dict[int, list[tuple[int, bytes]]] = {tp.partition: [] for tp in partitions}
        async for r in records_until(consumer, ends, timeout, topic):
            out[r.partition].append((r.offset, r.value))
        return out
    finally:
        await consumer.stop()


def verify_topic(records: Mapping[int, list[tuple[int, bytes]]]) -> Verification:
    result = Verification()
    for partition, rows in sorted(records.items()):
        verify_partition(partition, rows, result)
    return result


def evidence(records: list[dict[str, Any]], runs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One person's evidence from their audit records: each step with its time and its proof,
    in the order the facts happened (the chain's order breaks ties), and the training runs that
    read their rows. The writer chains facts as it reads their topics, so an `enforced` receipt
    read before the objection it confirms is chained first; the story is told by time."""
    steps = []
    trained_on: set[str] = set()
    for r in records:
        proof = {k: r[k] for k in ("partition", "offset", "version", "rows_purged", "receipt_partition", "receipt_offset") if k in r}
        proof["audit"] = {"partition": r["_partition"], "offset": r["_offset"], "hash": r["_hash"], "prev": r["prev"]}
        step = {"fact": r["fact"], "at_us": r["at_us"], "proof": proof}
        for key in ("kind", "channel", "objection_id", "objection_ids", "day", "reason", "count"):
            if key in r:
                step[key] = r[key]
        trained_on.update(r.get("trained_on_runs", ()))
        steps.append(step)
    steps.sort(key=lambda step: (step["at_us"], step["proof"]["audit"]["partition"], step["proof"]["audit"]["offset"]))
    return {
        "steps": steps,
        "trained_on_runs": [runs.get(run, {"run_id": run}) if runs else {"run_id": run} for run in sorted(trained_on)],
    }
