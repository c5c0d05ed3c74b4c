"""The consent table's rows, written a batch of events at a time.

faust owns the table: its store (RocksDB, one database per partition), its changelog topic,
its recovery and standby replicas. What changes is how a batch's rows get there. faust's
`table[key] = value` costs, per row, a store put, a changelog record through faust's producer
buffer (a FutureMessage, a task hand-over, a callback) and a persisted-offset write. Here a
batch's rows are staged (a user's row is written once per batch, however many of their events
it held), then written together:

1. the local store: one RocksDB WriteBatch per partition (a memory store: a dict);
2. the changelog: one aiokafka record batch per partition, each awaited until the broker has
   acknowledged it;
3. the persisted changelog offset of each partition, once (where recovery starts reading).

The agent acknowledges the batch's events only after `write` returned: no offset is committed
before its rows' changelog records are on the broker. The order of 1 and 2 is faust's own
(the row in the store first); a crash between them leaves a row whose record never left, which
the re-read event writes again (consentry/failpoints.py: `consent.after_table_write`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from faust.types import TP
from rocksdict import WriteBatch

from consentry import failpoints, patches

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class Row:
    partition: int
    state: Any  # the user's ConsentState, encoded once when the batch is written
    headers: Headers | None  # the trace context of the event that wrote it last
    value: bytes = b""


class StagedRows:
    """The rows a batch has changed so far, newest per user: read before the table."""

    def __init__(self) -> None:
        self._rows: dict[bytes, Row] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: bytes) -> Row | None:
        return self._rows.get(key)

    def put(self, key: bytes, partition: int, state: Any, headers: Headers | None) -> None:
        self._rows.pop(key, None)  # re-inserted: the records keep the order of the rows' last writes
        self._rows[key] = Row(partition, state, headers)

    def items(self) -> Iterator[tuple[bytes, Row]]:
        return iter(self._rows.items())

    def clear(self) -> None:
        self._rows.clear()


class Changelog(Protocol):
    """Where a batch's rows go after the local store."""

    async def write(self, rows: StagedRows) -> dict[int, int]:
        """Send every row and wait for the broker's acknowledgement: {partition: last offset}.
        Raises if any record was not acknowledged."""
        ...


class KafkaChangelog:
    """The changelog topic through the worker's own producer (faust's, started by faust), one
    record batch per partition at a time (aiokafka `create_batch`/`send_batch`)."""

    def __init__(self, topic: str, producer: Any, max_record_bytes: int) -> None:
        self.topic = topic
        self._producer = producer  # () -> the started aiokafka producer
        # A record batch takes its first record whatever its size; faust's send refused a record
        # over the producer's max_request_size, and so does this (the worker then stops).
        self._max_record_bytes = max_record_bytes

    async def write(self, rows: StagedRows) -> dict[int, int]:
        producer = self._producer()
        builders: dict[int, Any] = {}
        sent: list[tuple[int, int, Any]] = []  # (partition, records, future of the batch)

        async def submit(partition: int, builder: Any) -> None:
            future = await producer.send_batch(builder, self.topic, partition=partition)
            sent.append((partition, builder.record_count(), future))

        async def append(partition: int, key: bytes, value: bytes, headers: Headers) -> None:
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            elif builder.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                return
            else:  # full (the producer's max_batch_size): send it and start the next one
                await submit(partition, builder)
                builder = builders[partition] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a consent row of {len(value)} bytes does not fit in a record batch")

        for key, row in rows.items():
            headers = row.headers or []
            size = len(key) + len(row.value) + sum(len(k) + len(v) for k, v in headers)
            if size > self._max_record_bytes:
                raise ValueError(f"a consent row of {size} bytes is over CONSENTRY_CONSENT_MAX_RECORD_BYTES ({self._max_record_bytes})")
            await append(row.partition, key, row.value, headers)
        for partition, builder in builders.items():
            if builder.record_count():
                await submit(partition, builder)
        last: dict[int, int] = {}
        for (partition, count, _), metadata in zip(sent, await asyncio.gather(*(future for _, _, future in sent)), strict=True):
            last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
        return last


class TableRows:
    """The consent table's rows in faust's store: read one, write a batch."""

    def __init__(self, table: Any, changelog: Changelog, encode: Callable[[Any], bytes]) -> None:
        self.table = table
        self.changelog = changelog
        self._encode = encode

    def get(self, key: bytes, partition: int) -> bytes | None:
        store = self.table.data
        db = patches.store_partition_db(store, partition)
        return store.data.get(key) if db is None else db.get(key)

    async def write(self, rows: StagedRows) -> None:
        if not len(rows):
            return
        encode = self._encode
        for _key, row in rows.items():
            row.value = encode(row.state)
        store = self.table.data
        self._store(store, rows)
        failpoints.hit("consent.after_table_write")
        offsets = await self.changelog.write(rows)
        topic = self.table.changelog_topic.get_topic_name()
        for partition, offset in offsets.items():
            store.set_persisted_offset(TP(topic, partition), offset)  # a memory store keeps none

    def _store(self, store: Any, rows: StagedRows) -> None:
        dbs: dict[int, Any] = {}  # partition -> its RocksDB, or None for a memory store
        batches: dict[int, WriteBatch] = {}
        for key, row in rows.items():
            partition = row.partition
            if partition not in dbs:
                dbs[partition] = patches.store_partition_db(store, partition)
            if dbs[partition] is None:
                patches.memory_store_put(store, key, partition, row.value)
                continue
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            batch.put(key, row.value)
        for partition, batch in batches.items():
            dbs[partition].write(batch)
