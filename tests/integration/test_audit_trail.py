"""The audit writer on the real broker and a real Delta table: facts from every source are
chained into the topic and the table, a restart goes on from the last record (the chain does
not fork, nothing is repeated), and `verify` names a record tampered with in the table."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from consentry.audit import SCHEMA, AuditTable, read_topic, verify_topic
from consentry.domain.model import ENFORCED, PURGED, ObjectionEvent, Receipt
from consentry.kafka import client_options, ensure_topics
from consentry.partitioning import home_partition
from consentry.timeutil import format_rfc3339, now_us
from consentry.wire import encode_drop_count, encode_objection, encode_receipt
from services.audit.settings import AuditSettings
from services.audit.worker import AuditWorker
from tests.support.kafka import produce
from tests.support.ports import free_port
from tests.support.wait import eventually_async

PARTITIONS = 2


def audit_settings(broker: tuple[str, str], root: Path) -> AuditSettings:
    bootstrap, flavor = broker
    return AuditSettings(
        kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=f"t{uuid.uuid4().hex[:10]}-",
        partitions=PARTITIONS, data_dir=root / "var", audit_port=free_port(), session_timeout_ms=3000, heartbeat_interval_ms=500,
        audit_drop_counts_every_s=0.5,
    )


class RunningAudit:
    def __init__(self, settings: AuditSettings) -> None:
        self.worker = AuditWorker(settings)

    async def __aenter__(self) -> AuditWorker:
        await self.worker.start()
        self._task = asyncio.create_task(self.worker.run())
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.worker._stopping.set()
        try:
            await asyncio.wait_for(self._task, 30)
        finally:
            await self.worker.stop()


async def object_(settings: AuditSettings, user: str, oid: str, at: int, channel: str = "web") -> None:
    event = ObjectionEvent(oid, user, "object", at, channel, "my private reason")
    await produce(settings.bootstrap_servers, settings.topics.objections, [(user.encode(), encode_objection(event))], partition=home_partition(user, PARTITIONS))


async def receipt(settings: AuditSettings, r: Receipt, **extra: object) -> None:
    value = orjson.dumps({**orjson.loads(encode_receipt(r)), **extra})
    await produce(settings.bootstrap_servers, settings.topics.receipts, [(r.user_id.encode(), value)], partition=home_partition(r.user_id, PARTITIONS))


async def table_records(settings: AuditSettings, n: int) -> list[dict]:
    async def probe() -> list[dict] | None:
        records = await asyncio.to_thread(lambda: AuditTable(settings.table_uri).records())
        return records if len(records) >= n else None

    return await eventually_async(probe, timeout=60, what=f"{n} audit records in the table")


def test_facts_are_chained_into_topic_and_table_and_a_restart_goes_on_from_the_last_record(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = audit_settings(broker, tmp_path)

    async def scenario() -> None:
        await ensure_topics(settings)
        t = now_us() - 60_000_000
        await object_(settings, "alice", "o-a", t)
        await receipt(settings, Receipt(ENFORCED, "alice", ("o-a",), t + 1_000_000))
        await receipt(settings, Receipt(PURGED, "alice", ("o-a",), t + 3_000_000, 4, t + 1_000_000), version=7, trained_on_runs=["run-1"])
        await produce(settings.bootstrap_servers, settings.topics.drop_counts,
                      [(b"alice", encode_drop_count("alice", "2026-11-30", "objected", 12, t + 4_000_000))], partition=home_partition("alice", PARTITIONS))
        await produce(settings.bootstrap_servers, settings.topics.admin_actions, [(b"op", orjson.dumps({
            "action_id": "a-1", "action": "objections_import", "phase": "completed", "actor": "op", "client": "10.0.0.9",
            "started_at": format_rfc3339(t), "at": format_rfc3339(t + 5_000_000), "options": {"x": "y"}, "counts": {"accepted": 3, "lines": 3},
            "overrides": [{"objection_id": "w-1", "user_id": "u-9", "reason": "it would end an objection"}]}))])
        async with RunningAudit(settings):
            first = await table_records(settings, 5)
        # In chain order within a source; across sources in the order they were read.
        alice = sorted((r for r in first if r.get("user_id") == "alice"), key=lambda r: r["at_us"])
        assert [r["fact"] for r in alice] == ["received", "enforced", "purged", "dropped"]
        assert alice[0]["offset"] == 0 and alice[0]["channel"] == "web"
        assert alice[2]["rows_purged"] == 4 and alice[2]["version"] == 7 and alice[2]["trained_on_runs"] == ["run-1"]
        assert alice[3]["count"] == 12
        admin = [r for r in first if r["fact"] == "admin"]
        assert admin[0]["counts"] == {"accepted": 3, "lines": 3}
        everything = orjson.dumps(first)
        # No free text (an objection's reason, an override's), no client address.
        assert b"my private reason" not in everything and b"10.0.0.9" not in everything and b"it would end" not in everything

        # Restart: new facts chain on from the last record; nothing is written twice.
        await object_(settings, "bob", "o-b", t + 10_000_000, channel="import")
        async with RunningAudit(settings):
            second = await table_records(settings, 6)
        topic = await read_topic(client_options(settings), settings.topics.audit)
        assert len(second) == 6, ([(r["_partition"], r["_offset"], r["seq"], r["fact"]) for r in second], {p: [(o, orjson.loads(v)["seq"], orjson.loads(v)["fact"]) for o, v in rs] for p, rs in topic.items()})
        verification = verify_topic(topic)
        assert verification.ok, verification.summary()
        assert verification.records == 6
        assert (await asyncio.to_thread(AuditTable(settings.table_uri).verify)).ok

    asyncio.run(scenario())


def test_verify_names_a_record_changed_in_the_table(tmp_path: Path) -> None:
    from consentry.audit import row_of
    from consentry.domain.audit import ChainHead
    from deltalake import DeltaTable, write_deltalake

    uri = str(tmp_path / "audit")
    table = AuditTable(uri)
    head = ChainHead()
    rows = []
    for i in range(4):
        record, raw = head.link({"fact": "dropped", "user_id": "alice", "day": "2026-11-30", "reason": "objected", "count": i + 1, "at_us": i})
        rows.append(row_of(0, i, record, raw))
    table.append(rows)
    assert table.verify().ok
    # An insider lowers a count and recomputes that row's hash: the next link breaks.
    forged = dict(rows[1])
    record = orjson.loads(forged["record"])
    record["count"] = 0
    from consentry.domain.audit import canonical, digest

    raw = canonical(record)
    forged["record"], forged["hash"] = raw.decode(), digest(raw)
    dt = DeltaTable(uri)
    dt.delete("seq = 1")
    write_deltalake(dt, pa.Table.from_pylist([forged], schema=SCHEMA), mode="append")
    result = AuditTable(uri).verify()
    assert not result.ok
    assert (result.breaks[0].partition, result.breaks[0].position) == (0, 2), result.summary()
