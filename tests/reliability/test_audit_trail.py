"""The audit trail end to end, services as processes (a long test: `make test-reliability`; the
chain, its verification, the evidence and the report run in `make test` in tests/integration): a
person's objection, its enforcement, the purge of their stored post and the count of their later
posts dropped reach the chain with their proofs (the objection's offset on `objections`); the
gateway shows the person's evidence; the audit writer killed (-9) and started again goes on
from its last record: every objection chained once, and `consentry audit verify` finds the
chain intact."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from consentry.audit import AuditTable, default_audit_uri
from consentry.timeutil import format_rfc3339, now_us
from tests.conftest import running_system
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    yield from running_system(broker, tmp_path, request, audit=True)  # the notice rule off: not about notices


def post(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": f"text of {post_id}"}


def test_a_persons_chain_with_its_proofs_and_a_killed_writer_goes_on_without_fork_or_loss(system: System) -> None:
    system.create_topics()
    system.start()
    system.publish_posts([post("alice-1", "alice")])
    eventually(lambda: any(r["post_id"] == "alice-1" for r in system.training_rows()), what="alice-1 stored")
    system.object("alice")
    system.wait_status("alice", "purged")
    system.publish_posts([post("alice-2", "alice"), post("alice-3", "alice")])  # dropped: she objected

    table_uri = default_audit_uri(str(system.data_dir / "training"))

    def chain() -> list[dict] | None:
        try:
            records = AuditTable(table_uri, create=False).records("alice")
        except Exception:  # not created yet
            return None
        facts = [r["fact"] for r in records]
        drops = sum(r["count"] for r in records if r["fact"] == "dropped")
        return records if {"received", "enforced", "purged"} <= set(facts) and drops == 2 else None

    records = eventually(chain, timeout=60, what="alice's chain with her two dropped posts counted")
    [objection] = [orjson.loads(r.value) for r in system.read(system.topics.objections)]
    received = next(r for r in records if r["fact"] == "received")
    assert received["objection_id"] == objection["objection_id"] and received["offset"] == 0  # the proof of receipt
    purged = next(r for r in records if r["fact"] == "purged")
    assert purged["rows_purged"] == 1

    admin = {"Authorization": f"Bearer {system.token('operator', admin=True)}"}
    evidence = httpx.get(f"{system.gateway_url}/v1/admin/audit/alice", headers=admin, timeout=10).json()
    assert {"received", "enforced", "purged", "dropped"} <= {s["fact"] for s in evidence["steps"]}

    # Killed while objections arrive, started again: no fork, nothing lost, nothing twice.
    people = [f"p-{n}" for n in range(20)]
    for n, person in enumerate(people):
        system.object(person)
        if n == 5:
            system.kill("audit-writer")
        if n == 12:
            system.start("audit-writer")

    def everyone_received_once() -> bool:
        received = [r["objection_id"] for r in AuditTable(table_uri, create=False).records() if r["fact"] == "received"]
        assert len(received) == len(set(received)), "an objection chained twice"
        return len(received) == len(people) + 1

    eventually(everyone_received_once, timeout=120, what="every objection chained once")
    done = subprocess.run([sys.executable, "-m", "consentry_cli", "audit", "verify"], env=system.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain intact" in done.stderr
