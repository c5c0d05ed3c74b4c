"""Issue 14's doors that open between the services: the consent service's own views, and an
operator's import that would rewrite what a person's own objection covers. The services run
as processes on the embedded broker, as in production."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from consentry.timeutil import format_rfc3339, parse_rfc3339
from tests.support.kafka import read_topic
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

SERVICE_TOKEN = "service-token-" + uuid.uuid4().hex
IMPORT = "/v1/admin/objections:import"


@pytest.fixture
def guarded(broker: tuple[str, str], tmp_path) -> System:  # type: ignore[no-untyped-def]
    bootstrap, flavor = broker
    with System(bootstrap, flavor, tmp_path, extra_env={"CONSENTRY_SERVICE_TOKEN": SERVICE_TOKEN}) as system:
        yield system


def test_the_consent_service_answers_user_lookups_to_the_gateway_only(guarded: System) -> None:
    system = guarded
    system.create_topics()
    system.start("consent", "gateway")
    system.object("alice")
    consent = system.url("consent")

    # Anyone reaching the consent port: no person's state, and no faust table or router view.
    for path in ("/v1/user/status?user_id=alice", "/v1/user/state?user_id=alice"):
        assert httpx.get(f"{consent}{path}", timeout=10).status_code == 401, path
        assert httpx.get(f"{consent}{path}", headers={"Authorization": "Bearer guess"}, timeout=10).status_code == 401, path
    for path in ("/table/", "/table/consent/", "/router/"):
        assert httpx.get(f"{consent}{path}", timeout=10).status_code == 404, path
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and Prometheus stay open
        assert httpx.get(f"{consent}{path}", timeout=10).status_code == 200, path

    # The gateway presents the token: the person sees their objection.
    def applied() -> bool:
        state = httpx.get(f"{consent}/v1/user/status", params={"user_id": "alice"}, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10)
        return state.status_code == 200 and state.json()["objected"] is True

    eventually(applied, timeout=60, what="alice's objection in the consent table")
    assert system.status("alice")["objected"] is True


def test_an_imported_withdrawal_cannot_reopen_a_persons_own_objection(guarded: System) -> None:
    """An imported `withdraw` dated one second after a person's objection re-opened their posts,
    including those written while the objection stood, and nothing recorded who did it."""
    system = guarded
    system.create_topics()
    system.start("consent", "gateway")
    receipt = system.object("noa")
    objected_at = parse_rfc3339(receipt["received_at"])
    eventually(
        lambda: httpx.get(f"{system.url('consent')}/v1/user/status", params={"user_id": "noa"}, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10).json()["objected"],
        timeout=60, what="noa's objection in the consent table",
    )

    operator = system.token("ops-1", admin=True, scopes=("consentry:admin", "consentry:import-withdrawals"))
    headers = {"Authorization": f"Bearer {operator}", "Content-Type": "application/x-ndjson"}
    rewrite = {"objection_id": "legacy-w-1", "user_id": "noa", "kind": "withdraw", "received_at": format_rfc3339(objected_at + 1_000_000)}
    earlier = {"objection_id": "legacy-w-0", "user_id": "noa", "kind": "withdraw", "received_at": "2021-01-02T03:04:05Z"}
    body = orjson.dumps(rewrite) + b"\n" + orjson.dumps(earlier)

    refused = httpx.post(f"{system.gateway_url}{IMPORT}", headers=headers, content=body, timeout=30).json()
    assert (refused["accepted"], refused["rejected"]) == (1, 1), refused  # the one before her objection is history, harmless
    assert refused["rejected_lines"][0]["line"] == 1 and refused["rejected_lines"][0]["reason"].startswith("after_live_objection")
    filed = {e["objection_id"] for e in (orjson.loads(r.value) for r in system.read(system.topics.objections))}
    assert "legacy-w-1" not in filed

    # Explicitly overridden, it is accepted, and the admin actions record names it.
    forced = httpx.post(f"{system.gateway_url}{IMPORT}", headers=headers, content=orjson.dumps(rewrite), params={"override_live_objections": "true"}, timeout=30)
    assert forced.json()["accepted"] == 1, forced.text
    records = [orjson.loads(r.value) for r in read_topic(system.bootstrap, f"{system.prefix}consentry.admin-actions")]
    last = records[-1]
    assert (last["actor"], last["phase"], last["options"]) == ("ops-1", "completed", {"override_live_objections": True})
    assert last["counts"]["live_objection_overrides"] == 1 and last["overrides"][0]["objection_id"] == "legacy-w-1"
    assert records[-3]["counts"]["withdrawals_refused"] == 1
