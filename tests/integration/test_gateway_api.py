"""The objection API over real HTTP (uvicorn) against the real broker: idempotency, rate
limits, size limits, CORS and the docs."""

from __future__ import annotations

import httpx
import orjson

from tests.support.consent_stub import empty_consent_service
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import admin_token, link_token, user_token
from tests.support.kafka import read_topic


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(user)}"}


def objections_on_topic(settings) -> list[dict]:  # type: ignore[no-untyped-def]
    return [orjson.loads(r.value) for r in read_topic(settings.bootstrap_servers, settings.topics.objections)]


def test_an_objection_is_on_the_topic_once_and_a_repeated_idempotency_key_returns_the_same_receipt(start_gateway: StartGateway) -> None:
    with empty_consent_service() as consent_url:
        url, settings = start_gateway(consent_url=consent_url)
        check_idempotency(url, settings)


def check_idempotency(url: str, settings) -> None:  # type: ignore[no-untyped-def]
    headers = {**bearer("alice"), "Idempotency-Key": "settings-page-click-1"}
    first = httpx.post(f"{url}/v1/objections", headers=headers, json={"channel": "app", "reason": "no"})
    again = httpx.post(f"{url}/v1/objections", headers=headers, json={"channel": "app", "reason": "no"})
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json() == again.json()
    assert first.json()["user_id"] == "alice" and first.json()["status"] == "received"

    other = httpx.post(f"{url}/v1/objections", headers=bearer("alice"))
    assert other.json()["objection_id"] != first.json()["objection_id"]

    events = objections_on_topic(settings)
    assert sorted(e["objection_id"] for e in events) == sorted([first.json()["objection_id"], other.json()["objection_id"]])
    filed = next(e for e in events if e["objection_id"] == first.json()["objection_id"])
    assert (filed["user_id"], filed["kind"], filed["channel"], filed["reason"]) == ("alice", "object", "app", "no")
    assert filed["received_at"] == first.json()["received_at"]


def test_a_repeated_idempotency_key_after_a_withdrawal_is_a_conflict_not_the_old_receipt(start_gateway: StartGateway) -> None:
    """Issue 12: POST with key K, withdraw, POST with K again used to answer 202 with the old
    receipt while the person stayed withdrawn."""
    with empty_consent_service() as consent_url:
        url, settings = start_gateway(consent_url=consent_url)
        headers = {**bearer("bruno"), "Idempotency-Key": "k-1"}
        first = httpx.post(f"{url}/v1/objections", headers=headers)
        assert first.status_code == 202
        assert httpx.delete(f"{url}/v1/objections/me", headers=bearer("bruno")).status_code == 202
        again = httpx.post(f"{url}/v1/objections", headers=headers)
        assert again.status_code == 409, again.text
        assert again.json()["status"]["status"] == "withdrawn" and again.json()["status"]["objected"] is False
        assert "Idempotency-Key" in again.json()["detail"]
        kinds = [e["kind"] for e in objections_on_topic(settings) if e["user_id"] == "bruno"]
        assert kinds == ["object", "withdraw"]  # nothing was published for the refused repeat


def test_a_repeated_key_cannot_be_checked_without_the_consent_state_so_it_is_not_acknowledged(start_gateway: StartGateway) -> None:
    url, settings = start_gateway()  # nobody answers at the consent URL
    response = httpx.post(f"{url}/v1/objections", headers={**bearer("carla"), "Idempotency-Key": "k-2"})
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert [e for e in objections_on_topic(settings) if e["user_id"] == "carla"] == []


def test_a_reason_the_consent_service_would_refuse_is_422_not_202(start_gateway: StartGateway) -> None:
    """Issue 12: a NUL character in `reason` was answered 202, then skipped by the consent
    service; every writer now asks the consumer's own validator first."""
    url, settings = start_gateway()
    response = httpx.post(f"{url}/v1/objections", headers=bearer("dora"), json={"reason": "no\u0000thanks"})
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["detail"]
    assert [e for e in objections_on_topic(settings) if e["user_id"] == "dora"] == []


def test_tokens_are_required_and_a_link_token_is_not_an_api_token(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    assert httpx.post(f"{url}/v1/objections").status_code == 401
    link = link_token("alice")
    refused = httpx.get(f"{url}/v1/objections/me", headers={"Authorization": f"Bearer {link}"})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.post(f"{url}/v1/objections", headers={"Authorization": "Bearer not.a.jwt"}).json() == {"detail": "invalid token"}


def test_status_without_the_consent_service_is_a_clear_503(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    response = httpx.get(f"{url}/v1/objections/me", headers=bearer("alice"))
    assert response.status_code == 503
    assert "temporarily unavailable" in response.json()["detail"]


def test_a_user_sending_too_many_requests_gets_429_with_retry_after_and_others_do_not(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(rate_limit_user_per_s=0.1, rate_limit_user_burst=2)
    codes = [httpx.post(f"{url}/v1/objections", headers=bearer("eager")).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    limited = httpx.post(f"{url}/v1/objections", headers=bearer("eager"))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 10
    assert "too many requests" in limited.json()["detail"]
    assert httpx.post(f"{url}/v1/objections", headers=bearer("calm")).status_code == 202


def test_one_address_sending_too_many_requests_gets_429_whatever_the_user(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(rate_limit_user_per_s=0, rate_limit_address_per_s=0.1, rate_limit_address_burst=3)
    codes = [httpx.post(f"{url}/v1/objections", headers=bearer(f"user-{i}")).status_code for i in range(4)]
    assert codes == [202, 202, 202, 429]
    assert httpx.get(f"{url}/healthz").status_code == 200  # health and metrics are never limited


def test_an_oversized_body_gets_413_with_a_message_even_without_content_length(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(max_body_bytes=1024)
    big = orjson.dumps({"reason": "x" * 2000})
    declared = httpx.post(f"{url}/v1/objections", headers={**bearer("alice"), "Content-Type": "application/json"}, content=big)
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body too large: this endpoint accepts at most 1 KiB"}

    def chunks():  # type: ignore[no-untyped-def]
        yield big[:600]
        yield big[600:]

    streamed = httpx.post(f"{url}/v1/objections", headers={**bearer("alice"), "Content-Type": "application/json"}, content=chunks())
    assert streamed.status_code == 413
    assert httpx.post(f"{url}/v1/objections", headers=bearer("alice"), json={"reason": "short"}).status_code == 202


def test_cors_is_closed_by_default(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    preflight = httpx.options(
        f"{url}/v1/objections", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = httpx.get(f"{url}/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_opens_only_to_listed_origins(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(cors_allow_origins="https://app.example, https://www.example")
    request = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,idempotency-key"}
    allowed = httpx.options(f"{url}/v1/objections", headers={"Origin": "https://app.example", **request})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = httpx.options(f"{url}/v1/objections", headers={"Origin": "https://evil.example", **request})
    assert "access-control-allow-origin" not in refused.headers


def test_the_api_documentation_is_served(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    docs = httpx.get(f"{url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/v1/admin/objections:import" in spec["paths"] and "/object" in spec["paths"]


def test_a_lone_surrogate_in_a_body_field_is_a_clear_422_not_a_500(start_gateway: StartGateway) -> None:
    """Found by tests/reliability/test_acknowledged_means_enforced.py: a JSON escape of a lone
    surrogate (`"\\ud800"`) in any field is refused by validation, and FastAPI's default answer
    echoed the field's input, which cannot be encoded as UTF-8: a 500 instead of the 422."""
    with empty_consent_service() as consent_url:
        url, _ = start_gateway(consent_url=consent_url)
        headers = {**bearer("sam"), "Content-Type": "application/json"}
        for field, body in (("reason", b'{"reason": "\\ud800"}'), ("notice_version", b'{"notice_version": "x\\udfff"}'),
                            ("channel", b'{"channel": "\\ud800"}')):
            response = httpx.post(f"{url}/v1/objections", headers=headers, content=body)
            assert response.status_code == 422, (field, response.status_code, response.text[:300])
            assert response.json()["detail"][0]["loc"] == ["body", field], response.text


def test_a_body_that_is_not_utf8_gets_a_documented_answer(start_gateway: StartGateway) -> None:
    """Found by schemathesis's status-code check (tests/reliability/test_http_hostile.py):
    FastAPI answers 400 "There was an error parsing the body" to bytes that are not UTF-8,
    and the OpenAPI document listed no 400 for POST /v1/objections."""
    with empty_consent_service() as consent_url:
        url, _ = start_gateway(consent_url=consent_url)
        response = httpx.post(f"{url}/v1/objections", headers={**bearer("sam"), "Content-Type": "application/json"}, content=b'{"reason": "\xff"}')
        documented = httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/objections"]["post"]["responses"]
        assert 400 <= response.status_code < 500 and str(response.status_code) in documented, (response.status_code, sorted(documented))
        assert "detail" in response.json()


def test_a_run_id_with_a_line_break_is_a_clear_422_not_an_undocumented_404(start_gateway: StartGateway) -> None:
    """Found by schemathesis (tests/reliability/test_http_hostile.py): `/v1/admin/runs/%0A…`
    matched no route, since the path convertor's `.*` stops at a line break, and got a bare
    404 the API does not document. Every run id reaches the handler, which names the problem."""
    headers = {"Authorization": f"Bearer {admin_token()}"}
    with empty_consent_service() as consent_url:
        url, _settings = start_gateway(consent_url=consent_url)
        for run_id in ("%0A%F1%B2%86%86%C2%85", "run%0A", "team/%0Arun-1", "run%C2%85", "%0D%0A"):
            response = httpx.get(f"{url}/v1/admin/runs/{run_id}", headers=headers)
            assert response.status_code == 422, (run_id, response.status_code, response.text)
            assert "run_id" in response.json()["detail"], (run_id, response.text)
