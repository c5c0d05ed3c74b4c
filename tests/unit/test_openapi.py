"""The OpenAPI document: every operation, every response code documented with a body
schema and an example (what a client developer reads at /docs)."""

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def operations():  # type: ignore[no-untyped-def]
    spec = create_app(GatewaySettings()).openapi()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation, spec


def test_the_contract_endpoints_are_documented() -> None:
    documented = {name for name, _op, _spec in operations()}
    assert {
        "POST /v1/objections", "GET /v1/objections/me", "DELETE /v1/objections/me",
        "GET /object", "POST /object", "POST /v1/admin/objections:import", "POST /v1/admin/notices:import",
        "GET /healthz", "GET /readyz", "GET /metrics",
    } <= documented


def test_every_error_response_has_a_schema_and_an_example() -> None:
    missing = []
    for name, operation, spec in operations():
        for code, response in operation["responses"].items():
            if code.startswith("2") and name.startswith(("GET /healthz", "GET /readyz", "GET /metrics")):
                continue
            content = response.get("content") or {}
            if not content:
                missing.append(f"{name} {code}: no body")
                continue
            for media, body in content.items():
                if "schema" not in body:
                    missing.append(f"{name} {code} {media}: no schema")
                if code >= "300" and "example" not in body and "examples" not in body:
                    missing.append(f"{name} {code} {media}: no example")
    assert missing == []


def test_the_api_error_codes_people_meet_are_there() -> None:
    ops = {name: op for name, op, _spec in operations()}
    assert {"202", "401", "413", "422", "429", "503"} <= set(ops["POST /v1/objections"]["responses"])
    assert {"200", "401", "403", "413", "429", "503"} <= set(ops["POST /v1/admin/objections:import"]["responses"])
    assert {"200", "401", "403", "413", "429", "503"} <= set(ops["POST /v1/admin/notices:import"]["responses"])
    assert {"200", "400", "403", "410", "429", "503"} <= set(ops["POST /object"]["responses"])
    assert "Retry-After" in ops["POST /v1/objections"]["responses"]["429"]["headers"]


def test_success_bodies_carry_examples() -> None:
    spec = create_app(GatewaySettings()).openapi()
    for model in ("ObjectionReceipt", "ObjectionStatus", "ImportResult", "ObjectionRequest"):
        assert spec["components"]["schemas"][model].get("examples"), model
