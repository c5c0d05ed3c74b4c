"""Old requests count like new ones: objections imported from before the system existed
purge the posts already stored. And a request retried through another gateway replica
is recorded once, with its first receipt."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import pytest

from consentry.timeutil import format_rfc3339, now_us
from services.gateway.settings import GatewaySettings
from tests.support.gateway import running_gateway
from tests.support.ports import free_port
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def post(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": f"text of {post_id}"}


def historical(objection_id: str, user: str, received_at: str) -> bytes:
    return orjson.dumps({"objection_id": objection_id, "user_id": user, "kind": "object", "received_at": received_at, "reason": "by letter"})


def test_imported_historical_objections_purge_posts_already_stored(system: System) -> None:
    system.create_topics()
    system.start()
    system.publish_posts([post("ana-1", "ana"), post("ana-2", "ana"), post("ben-1", "ben"), post("kim-1", "kim")])
    eventually(lambda: len(system.training_rows()) == 4, timeout=60, what="posts stored")

    legacy = system.root / "legacy-objections.jsonl"
    legacy.write_bytes(
        b"\n".join(
            [
                historical("legacy-ana", "ana", "2021-09-14T08:00:00Z"),
                historical("legacy-ben", "ben", "2022-01-02T17:30:00Z"),
                b'{"objection_id": "legacy-broken", "user_id": "zoe"',
                historical("legacy-ana", "ana", "2021-09-14T08:00:00Z"),
            ]
        )
        + b"\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "consentry_cli", "import", str(legacy)], env=system.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "accepted 2, duplicates skipped 1, rejected 1" in done.stderr
    assert "line 3: invalid_json" in done.stderr

    for user, objection_id, received_at, rows in (("ana", "legacy-ana", "2021-09-14T08:00:00Z", 2), ("ben", "legacy-ben", "2022-01-02T17:30:00Z", 1)):
        status = system.wait_status(user, "purged")
        [entry] = status["history"]
        assert (entry["objection_id"], entry["channel"], entry["received_at"], entry["rows_purged"]) == (objection_id, "import", received_at, rows)
    assert [row["post_id"] for row in system.training_rows()] == ["kim-1"]


def test_a_retry_through_another_gateway_replica_returns_the_first_receipt(system: System) -> None:
    system.create_topics()
    system.start("consent", "gateway")
    headers = {"Authorization": f"Bearer {system.token('noa')}", "Idempotency-Key": "app-install-42-tap-7"}
    first = httpx.post(f"{system.gateway_url}/v1/objections", headers=headers, timeout=10)
    assert first.status_code == 202
    objection_id = first.json()["objection_id"]

    def recorded() -> bool:
        state = httpx.get(f"{system.url('consent')}/v1/user/status", params={"user_id": "noa"}, timeout=5)
        return state.status_code == 200 and [h["objection_id"] for h in state.json()["history"]] == [objection_id]

    eventually(recorded, timeout=60, what="objection in the consent table")

    replica = GatewaySettings(
        kafka_bootstrap_servers=system.bootstrap, broker_flavor=system.settings.broker_flavor, topic_prefix=system.prefix,
        partitions=system.partitions, gateway_port=free_port(), **system.key_settings, consent_url=system.url("consent"),
        data_dir=system.data_dir,
    )
    with running_gateway(replica) as other_replica:
        retried = httpx.post(f"{other_replica}/v1/objections", headers=headers, timeout=10)
    assert retried.status_code == 202
    assert retried.json() == first.json()  # same id, same received_at
    filed = [orjson.loads(r.value) for r in system.read(system.topics.objections)]
    assert [e["objection_id"] for e in filed] == [objection_id]
