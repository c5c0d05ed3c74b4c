"""The gateway over real HTTP, publishing to the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from consentry.kafka import ensure_topics
from consentry.partitioning import home_partition
from consentry.scrape import parse_metrics, total
from services.gateway.app import create_app
from services.gateway.auth import make_token
from services.gateway.settings import GatewaySettings
from tests.support.consent_stub import empty_consent_service
from tests.support.kafka import read_all
from tests.support.servers import serve_app
from tests.support.wait import eventually

SECRET = "gateway-test-secret-0123456789abcdef"


@pytest.fixture
def gateway(broker: tuple[str, str], tmp_path: Path) -> Iterator[tuple[str, GatewaySettings]]:
    bootstrap, flavor = broker
    with empty_consent_service() as consent_url:  # a consent table that has applied nothing yet
        settings = GatewaySettings(
            kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=f"g{uuid.uuid4().hex[:8]}-",
            partitions=4, jwt_secret=SECRET, data_dir=tmp_path, consent_url=consent_url,
        )
        asyncio.run(ensure_topics(settings))
        with serve_app(create_app(settings)) as url:
            eventually(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="gateway connected to the broker")
            yield url, settings


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SECRET, user)}"}


def objection_events(settings: GatewaySettings) -> list:
    return asyncio.run(read_all(settings.bootstrap_servers, settings.topics.objections))


def test_an_objection_is_answered_202_once_it_is_in_kafka(gateway) -> None:  # type: ignore[no-untyped-def]
    url, settings = gateway
    response = httpx.post(f"{url}/v1/objections", headers=bearer("u-42"), json={"reason": "not for AI", "channel": "web"})
    assert response.status_code == 202
    receipt = response.json()
    assert receipt["user_id"] == "u-42" and receipt["status"] == "received"

    [record] = objection_events(settings)
    assert record.key == b"u-42"
    assert record.partition == home_partition("u-42", settings.partitions)
    event = orjson.loads(record.value)
    assert event == {
        "objection_id": receipt["objection_id"], "user_id": "u-42", "kind": "object",
        "received_at": receipt["received_at"], "channel": "web", "reason": "not for AI",
    }


def test_the_same_idempotency_key_gives_the_same_receipt_and_one_event(gateway) -> None:  # type: ignore[no-untyped-def]
    url, settings = gateway
    headers = {**bearer("u-7"), "Idempotency-Key": "click-1"}
    first = httpx.post(f"{url}/v1/objections", headers=headers).json()
    second = httpx.post(f"{url}/v1/objections", headers=headers).json()
    assert first == second
    other_user = httpx.post(f"{url}/v1/objections", headers={**bearer("u-8"), "Idempotency-Key": "click-1"}).json()
    assert other_user["objection_id"] != first["objection_id"]
    assert len(objection_events(settings)) == 2


def test_withdrawal_is_an_event_too(gateway) -> None:  # type: ignore[no-untyped-def]
    url, settings = gateway
    response = httpx.delete(f"{url}/v1/objections/me", headers=bearer("u-9"))
    assert response.status_code == 202
    [record] = objection_events(settings)
    assert orjson.loads(record.value)["kind"] == "withdraw"


@pytest.mark.parametrize(
    ("headers", "body", "status", "detail"),
    [
        ({}, None, 401, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, None, 401, "invalid token"),
        ({"Authorization": f"Bearer {make_token(SECRET, 'u', ttl_seconds=-5)}"}, None, 401, "token expired"),
        ({"Authorization": f"Bearer {make_token('another-secret-0123456789abcdefgh', 'u')}"}, None, 401, "invalid token"),
        ({}, {"channel": "fax"}, 401, "missing bearer token"),
    ],
)
def test_unauthenticated_requests_get_a_clear_401(gateway, headers, body, status, detail) -> None:  # type: ignore[no-untyped-def]
    url, _ = gateway
    response = httpx.post(f"{url}/v1/objections", headers=headers, json=body)
    assert response.status_code == status
    assert response.json()["detail"] == detail


def test_malformed_bodies_get_a_422_naming_the_field(gateway) -> None:  # type: ignore[no-untyped-def]
    url, settings = gateway
    response = httpx.post(f"{url}/v1/objections", headers=bearer("u-1"), json={"channel": "fax"})
    assert response.status_code == 422
    assert "channel" in response.text
    assert objection_events(settings) == []


def test_status_shows_what_this_gateway_acknowledged_before_the_consent_table_has_it(gateway) -> None:  # type: ignore[no-untyped-def]
    url, _ = gateway
    assert httpx.get(f"{url}/v1/objections/me", headers=bearer("u-1")).json()["status"] == "none"
    assert httpx.post(f"{url}/v1/objections", headers=bearer("u-1")).status_code == 202
    document = httpx.get(f"{url}/v1/objections/me", headers=bearer("u-1")).json()
    assert (document["status"], document["objected"], len(document["history"])) == ("received", True, 1)


def test_health_readiness_and_metrics(gateway) -> None:  # type: ignore[no-untyped-def]
    url, _ = gateway
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json()["ready"] is True
    httpx.post(f"{url}/v1/objections", headers=bearer("u-m"), json={"channel": "app"})
    metrics = parse_metrics(httpx.get(f"{url}/metrics").text)
    assert total(metrics, "consentry_gateway_objections_total", kind="object", channel="app") >= 1
