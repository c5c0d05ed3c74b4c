"""The audit writer's cursors (services/audit/worker.py), without I/O: drop counts summed but not
chained yet hold back the cursor of every record chained meanwhile, so a restart reads them
again; once chained, the last record of the partition carries the cursor past them."""

from __future__ import annotations

import orjson

from consentry.domain.audit import ChainHead
from services.audit.settings import AuditSettings
from services.audit.worker import AuditWorker


def worker() -> AuditWorker:
    w = AuditWorker(AuditSettings(kafka_bootstrap_servers="127.0.0.1:1", broker_flavor="kafka", partitions=2))
    w.heads, w.cursors = {1: ChainHead()}, {1: {}}
    return w


def drop(user: str, count: int, at: int = 1) -> dict:
    return {"fact": "dropped", "user_id": user, "day": "2026-11-30", "reason": "objected", "count": count, "at_us": at}


def test_a_record_chained_while_drop_counts_wait_does_not_claim_them() -> None:
    w = worker()
    w.cursors[1]["drop-counts:1"] = 8  # read up to offset 7...
    w._sum_drop(1, "drop-counts:1", 5, drop("alice", 2))  # ...the first count summed at offset 5
    w._sum_drop(1, "drop-counts:1", 7, drop("alice", 3, at=9))
    w.cursors[1]["objections:1"] = 4
    w._chain(1, {"fact": "received", "user_id": "bob", "at_us": 2})
    received = orjson.loads(w._out[-1][2])
    assert received["cursor"] == {"drop-counts:1": 5, "objections:1": 4}  # a restart re-reads the counts

    w._chain_drops()
    summed = orjson.loads(w._out[-1][2])
    assert (summed["fact"], summed["count"], summed["at_us"]) == ("dropped", 5, 9)  # one record for both
    assert summed["cursor"] == {"drop-counts:1": 8, "objections:1": 4}
    assert [orjson.loads(raw)["seq"] for _q, _k, raw, _r in w._out] == [0, 1]


def test_only_the_last_of_several_summed_records_moves_the_cursor_past_them() -> None:
    w = worker()
    w.cursors[1]["drop-counts:1"] = 3
    w._sum_drop(1, "drop-counts:1", 1, drop("alice", 1))
    w._sum_drop(1, "drop-counts:1", 2, drop("bob", 4))
    w._chain_drops()
    cursors = [orjson.loads(raw)["cursor"]["drop-counts:1"] for _q, _k, raw, _r in w._out]
    assert cursors == [1, 3]
