"""`POST /v1/admin/objections:import` over real HTTP: operators only, every line accounted
for, accepted lines on the `objections` topic with their original date."""

from __future__ import annotations

import httpx
import orjson

from services.gateway.deps import ADMIN_REFUSAL
from tests.support.consent_stub import empty_consent_service
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import admin_token, user_token
from tests.support.kafka import read_topic

IMPORT = "/v1/admin/objections:import"


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token('operator', 'consentry:import-withdrawals')}", "Content-Type": "application/x-ndjson"}


def historical(objection_id: str, user: str, received_at: str = "2022-02-03T04:05:06Z", **extra: object) -> bytes:
    return orjson.dumps({"objection_id": objection_id, "user_id": user, "kind": "object", "received_at": received_at, **extra})


def test_only_operators_can_import(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    body = historical("h-1", "alice")
    assert httpx.post(f"{url}{IMPORT}", content=body).status_code == 401
    person = {"Authorization": f"Bearer {user_token('alice')}"}
    refused = httpx.post(f"{url}{IMPORT}", headers=person, content=body)
    assert refused.status_code == 403 and refused.json() == {"detail": ADMIN_REFUSAL}


def test_an_import_reports_every_line_and_publishes_the_accepted_ones_with_their_original_date(start_gateway: StartGateway) -> None:
    with empty_consent_service() as consent_url:  # a withdrawal is checked against the person's own objections
        url, settings = start_gateway(consent_url=consent_url)
        check_import_report(url, settings)


def check_import_report(url: str, settings) -> None:  # type: ignore[no-untyped-def]
    body = b"\n".join(
        [
            historical("h-1", "alice"),
            historical("h-2", "bob", channel="email", reason="asked by letter"),
            b'{"objection_id": "h-3", "user_id": "carol"',
            historical("h-1", "alice"),
            b"",
            historical("h-4", "dave", received_at="03/02/2022"),
            historical("h-5", "erin", kind="withdraw"),
        ]
    )
    response = httpx.post(f"{url}{IMPORT}", headers=admin(), content=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["lines"], result["accepted"], result["duplicates"], result["rejected"]) == (7, 3, 1, 2)
    assert [(r["line"], r["reason"].split(":")[0]) for r in result["rejected_lines"]] == [(3, "invalid_json"), (6, "bad_timestamp")]

    events = {e["objection_id"]: e for e in (orjson.loads(r.value) for r in read_topic(settings.bootstrap_servers, settings.topics.objections))}
    assert sorted(events) == ["h-1", "h-2", "h-5"]
    assert events["h-1"]["received_at"] == "2022-02-03T04:05:06Z" and events["h-1"]["channel"] == "import"
    assert (events["h-2"]["channel"], events["h-2"]["reason"]) == ("email", "asked by letter")
    assert events["h-5"]["kind"] == "withdraw"


def test_a_large_import_is_streamed_in(start_gateway: StartGateway) -> None:
    url, settings = start_gateway(partitions=2)
    lines = 30_000

    def body():  # sent chunked, 1,000 lines at a time
        for start in range(0, lines, 1000):
            yield b"".join(historical(f"bulk-{n}", f"user-{n % 997}") + b"\n" for n in range(start, start + 1000))

    response = httpx.post(f"{url}{IMPORT}", headers=admin(), content=body(), timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == lines
    assert len(read_topic(settings.bootstrap_servers, settings.topics.objections)) == lines


def test_an_import_over_its_own_limit_gets_413_while_it_may_exceed_the_api_limit(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(max_body_bytes=1024, max_import_bytes=4096)
    body = b"\n".join(historical(f"h-{n}", "alice") for n in range(20))  # ~2 KiB: over the API limit, under the import's
    assert httpx.post(f"{url}{IMPORT}", headers=admin(), content=body).status_code == 200
    too_big = b"\n".join(historical(f"h-{n}", "alice") for n in range(100))
    refused = httpx.post(f"{url}{IMPORT}", headers=admin(), content=too_big)
    assert refused.status_code == 413
    assert refused.json() == {"detail": "request body too large: this endpoint accepts at most 4 KiB"}
