"""The audit writer: facts that are already durable, chained into `consentry.audit` and the Delta
audit table, off the hot path.

Sources: `objections` (partition and offset: proof of receipt), `consentry.receipts`
(`enforced`, `purged`), `consentry.drop-counts` (ingest's per-user-day counts),
`consentry.admin-actions`, `consentry.lineage` (when it exists), and the vacuum and
reconciliation records beside the training store (polled).

The chain: audit partition p takes the facts of user-keyed partition p (objections, receipts
and drop counts are all in the user's home partition); table-level facts (admin actions, runs,
vacuums, reconciliations) go to partition 0 under the key "". Each record carries its `seq`,
the hash of the previous record in its partition (consentry.domain.audit) and `cursor`: for
every source that feeds its partition, the offset after the last source record read. A restart
reads the last record of each partition and goes on from its hash and its cursor, whatever the
group committed: the chain neither forks nor repeats. One writer per partition: run one
replica (a second would share the partitions of admin actions and lineage, which all feed
partition 0).

The table follows the topic: each flush appends the rows of the records the broker acknowledged;
rows the table could not take are retried at the next flush and, after a crash, copied from
the topic at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from consentry.audit import AuditTable, row_of
from consentry.domain.audit import TABLE_KEY, ChainHead, digest
from consentry.kafka import client_options, producer_options, records_until, wait_partitions
from consentry.logs import ids
from consentry.patches import true_end_offsets
from consentry.web import StatusServer
from consentry.kafka_worker import Batch, Bounds, Flushed, KafkaWorker, group_consumer
from services.audit import facts, metrics
from services.audit.settings import AuditSettings

log = logging.getLogger(__name__)

TABLE_PARTITION = 0  # where table-level facts are chained


class AuditWorker(KafkaWorker):
    def __init__(self, settings: AuditSettings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("audit", Bounds(max_records=5_000, poll_ms=200, flush_records=5_000, flush_seconds=0.5), clock)
        self.settings = settings
        t = settings.topics
        self.lineage_topic = getattr(t, "lineage", f"{t.prefix}consentry.lineage")  # the lineage work's topic
        self.roles = {t.objections: "objections", t.receipts: "receipts", t.drop_counts: "drop-counts",
                      t.admin_actions: "admin-actions", self.lineage_topic: "lineage"}
        self.user_keyed = {t.objections, t.receipts, t.drop_counts}
        self.heads: dict[int, ChainHead] = {}
        self.cursors: dict[int, dict[str, int]] = {}  # audit partition -> source -> next offset
        self._out: list[tuple[int, bytes, bytes, dict[str, Any]]] = []  # (partition, key, raw, record) to send
        self._table_backlog: list[dict[str, Any]] = []  # acknowledged rows the table has not taken yet
        self._files_at = float("-inf")
        self._verified_at = float("-inf")
        self._verifier: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}  # next offset to commit, of what was handled
        # Drop counts are summed here per (user, day, reason) and chained every audit_drop_counts_every_s:
        # one record per user and reason per period, whatever ingest's emission interval. Until they
        # are chained, the cursors of the records chained meanwhile stay at the first drop count
        # summed (a restart reads them again).
        self._drops: dict[int, dict[tuple[str, str, str], list[int]]] = {}  # partition -> key -> [count, last at_us]
        self._drops_from: dict[int, dict[str, int]] = {}  # partition -> source -> offset of its first unchained count
        self._drops_at = self._clock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        self.table = await asyncio.to_thread(AuditTable, s.table_uri)
        self.producer = AIOKafkaProducer(**producer_options(s), linger_ms=5)
        await self.producer.start()
        self.audit_partitions = await wait_partitions(self.producer, s.topics.audit)
        await self._catch_up_table()
        sources = [s.topics.objections, s.topics.receipts, s.topics.drop_counts, s.topics.admin_actions]
        if await self._exists(self.lineage_topic):  # none before the lineage work: tolerated
            sources.append(self.lineage_topic)
        consumer = group_consumer(
            client_options(s), s.topics.group("audit"), "consentry-audit",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms,
        )
        await self.start_consumer(consumer, sources)
        self.status = StatusServer(s.audit_host, s.audit_port, self.readiness)
        await self.status.start()
        log.info("audit writer: %s -> %s and %s", ", ".join(sources), s.topics.audit, s.table_uri)

    async def _exists(self, topic: str) -> bool:
        await self.producer.client.force_metadata_update()
        return topic in self.producer.client.cluster.topics()

    async def stop(self) -> None:
        async with self._lock:  # the drop counts summed so far: chained before stopping
            try:
                self._chain_drops()
                await self._write()
            except Exception:
                log.exception("the last drop counts were not chained: the next start reads them again")
        if self._verifier is not None:
            self._verifier.cancel()
            await asyncio.gather(self._verifier, return_exceptions=True)
        await self.stop_consuming()
        for closer in (self.consumer.stop, self.producer.stop, self.status.stop):
            try:
                await closer()
            except Exception:
                log.exception("error while stopping")

    def readiness(self) -> tuple[bool, str]:
        if not self.assigned:
            return False, "waiting for a partition assignment"
        return True, f"chaining audit partitions {sorted(self.heads)}"

    # ------------------------------------------------------------------ the skeleton's hooks

    def _audit_partition(self, tp: TopicPartition) -> int:
        return tp.partition if tp.topic in self.user_keyed else TABLE_PARTITION

    def _source(self, tp: TopicPartition) -> str:
        return f"{self.roles[tp.topic]}:{tp.partition}"

    async def on_assigned(self, partitions: set[TopicPartition]) -> bool:
        """Go on from the last record of each audit partition these sources feed: its hash, its
        seq and its cursor (sources it does not name start from their beginning)."""
        wanted = {self._audit_partition(tp) for tp in partitions}
        tails = await self._tails(wanted)
        self.heads, self.cursors, self._drops, self._drops_from = {}, {}, {}, {}
        for q in wanted:
            raw = tails.get(q)
            head, cursor = ChainHead(), {}
            if raw is not None:
                try:
                    last = orjson.loads(raw)
                    head, cursor = ChainHead(int(last["seq"]) + 1, digest(raw)), dict(last.get("cursor", {}))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    # Never chain on from a record we cannot read: the chain would hide it.
                    metrics.CHAIN_BROKEN.set(1)
                    raise RuntimeError(f"the last record of {self.settings.topics.audit}[{q}] is unreadable: run `consentry audit verify`")
            self.heads[q], self.cursors[q] = head, cursor
        beginning = [tp for tp in partitions if self._source(tp) not in self.cursors[self._audit_partition(tp)]]
        if beginning:
            await self.consumer.seek_to_beginning(*beginning)
        for tp in partitions:
            offset = self.cursors[self._audit_partition(tp)].get(self._source(tp))
            if offset is not None:
                self.consumer.seek(tp, offset)
        self._files_at = float("-inf")
        log.info("audit partitions %s: going on from seq %s", sorted(wanted), {q: h.seq for q, h in sorted(self.heads.items())})
        return True

    async def handle(self, batch: Batch) -> int:
        before = len(self._out)
        for tp, records in batch.items():
            q, source, role = self._audit_partition(tp), self._source(tp), self.roles[tp.topic]
            cursor = self.cursors[q]
            for record in records:
                fact = self._fact(role, record.value, tp.partition, record.offset)
                cursor[source] = record.offset + 1
                self._positions[tp] = record.offset + 1
                if fact is None:
                    metrics.UNREADABLE.labels(role).inc()
                    log.warning("skipped an unreadable %s record", role, extra=ids(topic=tp.topic, partition=tp.partition, offset=record.offset))
                    continue
                if role == "drop-counts":
                    self._sum_drop(q, source, record.offset, fact)
                    continue
                self._chain(q, fact)
        return len(self._out) - before

    def _fact(self, role: str, value: bytes | None, partition: int, offset: int) -> dict[str, Any] | None:
        if role == "objections":
            return facts.received(value, partition, offset)
        if role == "receipts":
            return facts.receipt(value, partition, offset)
        if role == "drop-counts":
            return facts.dropped(value)
        if role == "admin-actions":
            return facts.admin_action(value)
        return facts.run_read(value)

    def _chain(self, q: int, fact: dict[str, Any]) -> None:
        cursor = {**self.cursors[q], **self._drops_from.get(q, {})}  # not past a drop count not chained yet
        record, raw = self.heads[q].link({**fact, "cursor": cursor})
        self._out.append((q, fact.get("user_id", TABLE_KEY).encode(), raw, record))

    def _sum_drop(self, q: int, source: str, offset: int, fact: dict[str, Any]) -> None:
        self._drops_from.setdefault(q, {}).setdefault(source, offset)
        summed = self._drops.setdefault(q, {}).setdefault((fact["user_id"], fact["day"], fact["reason"]), [0, 0])
        summed[0] += fact["count"]
        summed[1] = max(summed[1], fact["at_us"])

    def _chain_drops(self) -> None:
        """One record per (user, day, reason) summed since the last time. The last one of a
        partition carries the cursor past every count it sums; a crash while they are sent makes
        the next start chain those counts again (counted twice: the error errs towards more)."""
        self._drops_at = self._clock()
        for q, sums in self._drops.items():
            items = sorted(sums.items())
            for n, ((user, day, reason), (count, at_us)) in enumerate(items):
                if n == len(items) - 1:
                    self._drops_from.pop(q, None)
                self._chain(q, {"fact": "dropped", "user_id": user, "day": day, "reason": reason, "count": count, "at_us": at_us})
        self._drops = {}
        self._drops_from = {}

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """The skeleton flushed what was handled; the drop counts summed for these partitions go too."""
        self._chain_drops()
        await self._write()

    async def tick(self, ready: bool) -> bool:
        """The vacuum and reconciliation records beside the training store, every audit_files_poll_s,
        by the owner of the table-level partition: a new run is a fact."""
        interval = self.settings.audit_verify_interval_s
        if interval and (self._verifier is None or self._verifier.done()) and self._clock() - self._verified_at >= interval:
            self._verified_at = self._clock()
            self._verifier = asyncio.create_task(self._verify())
        if ready and TABLE_PARTITION in self.heads and self._clock() - self._files_at >= self.settings.audit_files_poll_s:
            self._files_at = self._clock()
            cursor = self.cursors[TABLE_PARTITION]
            for name, make in (("vacuum", facts.vacuumed), ("reconcile", facts.reconciled)):
                record = await asyncio.to_thread(self._read_record, f"{name}.json")
                if record is None or not isinstance(record.get("runs"), int) or record["runs"] <= cursor.get(name, 0):
                    continue
                cursor[name] = record["runs"]
                try:
                    self._chain(TABLE_PARTITION, make(record))
                except (KeyError, TypeError):
                    metrics.UNREADABLE.labels(name).inc()
                    log.warning("the %s record beside the training store is not in the expected form", name)
        if self._drops and self._clock() - self._drops_at >= self.settings.audit_drop_counts_every_s:
            self._chain_drops()
        if self._out:
            await self._write()
        return False

    async def _verify(self) -> None:
        """The table's whole chain, in a thread (its own table object: the writer appends meanwhile)."""
        try:
            result = await asyncio.to_thread(lambda: AuditTable(self.table.uri, create=False).verify())
        except Exception:
            metrics.ERRORS.labels("verify").inc()
            log.exception("could not verify the audit table's chain")
            return
        metrics.CHAIN_BROKEN.set(0 if result.ok else 1)
        metrics.LAST_VERIFIED.set(time.time())
        if result.ok:
            log.info("audit table verified: %s", result.summary())
        else:
            log.error("audit table verification: %s (docs/operations.md, ConsentryAuditChainBroken)", result.summary())

    def _read_record(self, name: str) -> dict[str, Any] | None:
        from pyarrow import fs

        try:
            filesystem, root = fs.FileSystem.from_uri(self.settings.store_uri)
            with filesystem.open_input_stream(f"{root.rstrip('/')}/_consentry/{name}") as stream:
                value = orjson.loads(stream.read())
            return value if isinstance(value, dict) else None
        except FileNotFoundError:
            return None
        except Exception:
            metrics.ERRORS.labels("records").inc()
            log.warning("could not read %s beside the training store", name, exc_info=True)
            return None

    async def flush(self) -> Flushed:
        if self._drops and self._clock() - self._drops_at >= self.settings.audit_drop_counts_every_s:
            self._chain_drops()
        await self._write()
        positions, self._positions = self._positions, {}
        return Flushed(positions)

    async def _write(self) -> None:
        """Send the chained records (in order per partition), wait for the broker, then append
        their rows to the table (what it cannot take now waits for the next write)."""
        out, self._out = self._out, []
        topic = self.settings.topics.audit
        futures = [await self.producer.send(topic, raw, key=key, partition=q) for q, key, raw, _ in out]
        done = await asyncio.gather(*futures)
        for (q, _, raw, record), meta in zip(out, done):
            self._table_backlog.append(row_of(q, meta.offset, record, raw))
            metrics.RECORDS.labels(record["fact"]).inc()
        await self._append_backlog()

    async def _append_backlog(self) -> None:
        if not self._table_backlog:
            return
        rows = self._table_backlog
        try:
            await asyncio.to_thread(self.table.append, rows)
        except Exception:
            metrics.ERRORS.labels("table").inc()
            log.exception("the audit table refused %d rows: retried at the next flush (the topic has them)", len(rows))
        else:
            self._table_backlog = []
        metrics.TABLE_BEHIND.set(len(self._table_backlog))

    # ------------------------------------------------------------------ the topic's tails, the table's catch-up

    async def _reader(self) -> AIOKafkaConsumer:
        reader = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False, fetch_max_wait_ms=50, client_id="consentry-audit-tail")
        await reader.start()
        return reader

    async def _tails(self, partitions: set[int], timeout: float = 30.0) -> dict[int, bytes]:
        """The last record of each audit partition that has one."""
        reader = await self._reader()
        try:
            tps = [TopicPartition(self.settings.topics.audit, q) for q in sorted(partitions)]
            reader.assign(tps)
            # Fetch high watermarks, not ListOffsets: Tansu 0.6.0 answers the latter wrongly after a
            # batch of several records (consentry.patches.true_end_offsets), and the chain would fork.
            ends = await true_end_offsets(client_options(self.settings), tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            for tp in pending:
                reader.seek(tp, ends[tp] - 1)
            found: dict[int, bytes] = {}
            async for r in records_until(reader, {tp: ends[tp] for tp in pending}, timeout, f"the last records of {self.settings.topics.audit}"):
                found[r.partition] = r.value
            return found
        finally:
            await reader.stop()

    async def _catch_up_table(self, timeout: float = 120.0) -> None:
        """Copy into the table what the topic holds beyond it (a crash between the broker's ack and
        the table's commit)."""
        topic = self.settings.topics.audit
        have = await asyncio.to_thread(self.table.next_offsets)
        reader = await self._reader()
        rows: list[dict[str, Any]] = []
        try:
            tps = [TopicPartition(topic, q) for q in range(self.audit_partitions)]
            reader.assign(tps)
            ends = await true_end_offsets(client_options(self.settings), tps)
            pending = {tp for tp in tps if ends[tp] > have.get(tp.partition, 0)}
            for tp in pending:
                reader.seek(tp, have.get(tp.partition, 0))
            async for r in records_until(reader, {tp: ends[tp] for tp in pending}, timeout, f"{topic} (what the audit table misses)"):
                rows.append(row_of(r.partition, r.offset, orjson.loads(r.value), r.value))
        finally:
            await reader.stop()
        if rows:
            log.warning("the audit table missed %d records of the topic (a crash before its commit): copied", len(rows))
            await asyncio.to_thread(self.table.append, rows)

