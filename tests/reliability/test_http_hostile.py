"""Hostile HTTP: the gateway answers every malformed, oversized or unauthorised request
with a clear 4xx, never a 5xx, and keeps running; schemathesis fuzzes its OpenAPI document.

schemathesis runs twice, as a user (every operation but the admin ones) and as an operator
with the admin scope (the admin imports), with its server-error, status-code, content-type
and response-schema checks: every answer must be one the document lists, with the body it
describes. Then every objection the fuzz got `202` for, and every line an admin import
accepted, must be in the consent state itself (objection events enforced, notices there).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import running_system
from tests.support import ledger
from tests.support.logcheck import assert_logs_clean
from tests.support.system import System
from tests.support.wait import eventually

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
ROOT = Path(__file__).resolve().parents[2]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
ADMIN = "^/v1/admin/"
ENFORCE_DEADLINE_S = 90.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hostile_requests(system: System) -> list[tuple[str, str, dict, bytes | None, int, str]]:
    """(label, method+path, headers, body, expected status, words the message must hold)."""
    alice = system.token("alice")
    people = system.user_keys.signing
    kid = {"kid": people.kid}
    expired = jwt.encode({"sub": "alice", "aud": "consentry", "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, people.secret, algorithm="HS256", headers=kid)
    foreign = jwt.encode({"sub": "alice", "aud": "consentry", "exp": int(time.time()) + 3600}, "another-secret-entirely-not-the-gateways-one", algorithm="HS256", headers=kid)
    no_exp = jwt.encode({"sub": "alice", "aud": "consentry"}, people.secret, algorithm="HS256", headers=kid)
    no_aud = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, people.secret, algorithm="HS256", headers=kid)
    link_as_bearer = system.link("alice")
    none_alg = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, None, algorithm="none")
    json = {"Content-Type": "application/json"}
    return [
        ("no token", "POST /v1/objections", {}, None, 401, "missing bearer token"),
        ("garbage token", "POST /v1/objections", bearer("not.a.jwt"), None, 401, "invalid token"),
        ("expired token", "GET /v1/objections/me", bearer(expired), None, 401, "token expired"),
        ("token signed by someone else", "DELETE /v1/objections/me", bearer(foreign), None, 401, "invalid token"),
        ("token without expiry", "POST /v1/objections", bearer(no_exp), None, 401, "invalid token"),
        ("token for any audience", "POST /v1/objections", bearer(no_aud), None, 401, "not issued for this service"),
        ("a one-click link as a bearer token", "DELETE /v1/objections/me", bearer(link_as_bearer), None, 401, "invalid token"),
        ("a person's token at the import", "POST /v1/admin/objections:import", bearer(alice), b"{}", 403, "consentry:admin"),
        ("a person's token at the dashboard data", "GET /dashboard/data", bearer(alice), None, 403, "consentry:admin"),
        ("unsigned token (alg none)", "POST /v1/objections", bearer(none_alg), None, 401, "invalid token"),
        ("basic auth", "POST /v1/objections", {"Authorization": "Basic YWxpY2U6cGFzcw=="}, None, 401, "missing bearer token"),
        ("objecting for another user", "POST /v1/objections", {**bearer(alice), **json}, b'{"user_id": "bob"}', 422, "user_id"),
        ("not JSON", "POST /v1/objections", {**bearer(alice), **json}, b"{not json", 422, "JSON"),
        ("JSON array", "POST /v1/objections", {**bearer(alice), **json}, b"[1, 2]", 422, "dict"),
        ("unknown channel", "POST /v1/objections", {**bearer(alice), **json}, b'{"channel": "fax"}', 422, "channel"),
        ("lone surrogate in the reason", "POST /v1/objections", {**bearer(alice), **json}, b'{"reason": "\\ud800"}', 422, "reason"),
        ("body not UTF-8", "POST /v1/objections", {**bearer(alice), **json}, b'{"reason": "\xff"}', 400, "parsing the body"),
        ("reason too long", "POST /v1/objections", {**bearer(alice), **json}, b'{"reason": "' + b"x" * 3000 + b'"}', 422, "reason"),
        ("idempotency key too long", "POST /v1/objections", {**bearer(alice), "Idempotency-Key": "k" * 500}, None, 422, "Idempotency-Key"),
        ("body over the limit", "POST /v1/objections", {**bearer(alice), **json}, b'{"reason": "' + b"x" * (2 << 20) + b'"}', 413, "too large"),
        ("another user's path", "GET /v1/objections/bob", bearer(alice), None, 404, "Not Found"),
    ]


def raw_request(system: System, head: bytes) -> bytes:
    """A request no well-behaved client would send (a Content-Length the body never reaches)."""
    import socket

    with socket.create_connection(("127.0.0.1", system.ports["gateway"]), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):  # the gateway closes the connection after a 413
            answer += chunk
        return answer


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The whole system as `consentry up` runs it, the audit writer included: the admin audit
    route answers from its table."""
    yield from running_system(broker, tmp_path, request, audit=True)


def chunked(body: bytes):  # a body without Content-Length
    for i in range(0, len(body), 65536):
        yield body[i : i + 65536]


@pytest.mark.parametrize("examples", [pytest.param(40, id="quick", marks=pytest.mark.quick), pytest.param(400, id="full", marks=[pytest.mark.reliability, pytest.mark.timeout(1500)])])
def test_hostile_http_gets_clear_4xx_and_schemathesis_finds_no_5xx(system: System, examples: int) -> None:
    system.create_topics()
    system.start()
    # The audit writer creates its table as it starts; until then the audit route answers 503.
    eventually(lambda: (system.data_dir / "audit" / "_delta_log").is_dir(), timeout=60, what="the audit table created")
    checked = 0
    with httpx.Client(base_url=system.gateway_url, timeout=30) as client:
        for label, route, headers, body, status, words in hostile_requests(system):
            method, path = route.split(" ")
            response = client.request(method, path, headers=headers, content=body)
            assert response.status_code == status, f"{label}: {response.status_code} {response.text[:300]}"
            assert words.lower() in response.text.lower(), f"{label}: unclear message {response.text[:300]}"
            checked += 1
        streamed = client.post("/v1/objections", headers={**bearer(system.token("alice")), "Content-Type": "application/json"},
                               content=chunked(b'{"reason": "' + b"y" * (1 << 20) + b'"}'))
        assert streamed.status_code == 413 and "too large" in streamed.text, streamed.text[:300]
        answer = raw_request(system, b"POST /v1/objections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + system.token("alice").encode()
                             + b"\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{}")
        assert answer.startswith(b"HTTP/1.1 413") and b"too large" in answer, answer[:300]
        # Another user's token only ever shows that user's own state.
        client.post("/v1/objections", headers=bearer(system.token("alice")))
        bob = client.get("/v1/objections/me", headers=bearer(system.token("bob"))).json()
        assert bob["user_id"] == "bob" and bob["history"] == []
        assert client.get("/healthz").status_code == 200
    checked += 3

    token, admin = system.token("fuzz-user"), system.token("fuzz-operator", admin=True)
    user_run = fuzz(system, token, examples, "user", ["--exclude-path-regex", ADMIN])
    admin_run = fuzz(system, admin, examples, "admin", ["--include-path-regex", ADMIN])
    assert system.processes["gateway"].poll() is None, "the gateway died"
    acknowledged = acknowledged_by_fuzz(user_run["har"] + admin_run["har"])
    assert acknowledged["objections"], "the fuzz never got a 202: nothing to check"
    check_applied(system, acknowledged)
    print(f"schemathesis: {user_run['generated']} cases as a user, {admin_run['generated']} as an admin; "
          f"{len(acknowledged['objections'])} acknowledged objection events and {len(acknowledged['notices'])} notices, all applied")
    assert_logs_clean(system, [], [token, admin, system.token("alice")], services=("gateway",))
    ledger.record("fail closed", **{"hostile HTTP requests": checked + user_run["generated"] + admin_run["generated"], "5xx answers": 0,
                                    "undocumented answers": 0})
    ledger.record("nothing lost", **{"fuzz 202s checked applied": len(acknowledged["objections"]) + len(acknowledged["notices"])})


def fuzz(system: System, token: str, examples: int, name: str, scope: list[str]) -> dict:
    """One schemathesis run; returns how many cases it generated and its HAR entries."""
    reports = system.root / f"schemathesis-{name}"
    run = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{system.gateway_url}/openapi.json", "--checks", CHECKS, "--header", f"Authorization: Bearer {token}",
         "--max-examples", str(examples), "--seed", "20250527", "--generation-deterministic", "--no-shrink", "--workers", "1",
         "--wait-for-schema", "30", "--request-timeout", "20", "--output-sanitize", "true", "--report", "har", "--report-dir", str(reports), *scope],
        capture_output=True, text=True, timeout=900, cwd=system.root, env={**system.env, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "PYTHONPATH": str(ROOT)},
    )
    print(run.stdout[-1500:])
    assert run.returncode == 0, f"schemathesis as {name}: " + run.stdout[-6000:] + run.stderr[-2000:]
    generated = sum(int(n) for n in re.findall(r"(\d+) generated", run.stdout))
    operations = re.search(r"Operations:\s+(\d+) selected", run.stdout)
    assert operations and int(operations.group(1)) >= 2, f"schemathesis as {name} selected no operations: {run.stdout[-1500:]}"
    assert generated >= examples, f"schemathesis as {name} ran only {generated} cases: {run.stdout[-1500:]}"
    hars = sorted(reports.glob("har-*.json"))
    assert hars, f"no HAR report in {reports}"
    return {"generated": generated, "har": [entry for har in hars for entry in json.loads(har.read_text())["log"]["entries"]]}


def acknowledged_by_fuzz(entries: list[dict]) -> dict[str, set[tuple[str, str]]]:
    """(user_id, objection_id) of every 202 objection or withdrawal, and of every objection
    event an admin import accepted; (user_id, notice_id) of every notice it accepted."""
    objections: set[tuple[str, str]] = set()
    notices: set[tuple[str, str]] = set()
    for entry in entries:
        request, response = entry["request"], entry["response"]
        path = request["url"].split("?", 1)[0].split("/", 3)[-1]
        text = response.get("content", {}).get("text") or ""
        if response["status"] == 202 and path in ("v1/objections", "v1/objections/me"):
            receipt = json.loads(text)
            objections.add((receipt["user_id"], receipt["objection_id"]))
        elif response["status"] == 200 and path in ("v1/admin/objections:import", "v1/admin/notices:import"):
            report = json.loads(text)
            if not report["accepted"]:
                continue
            assert not report["rejected_lines_truncated"], report
            rejected = {r["line"] for r in report["rejected_lines"]}
            ids = set()
            for number, line in enumerate(request.get("postData", {}).get("text", "").split("\n"), start=1):
                if number in rejected or not line.strip():
                    continue
                event = json.loads(line)
                ids.add((event["user_id"], event["objection_id" if "objection_id" in event else "notice_id"]))
            assert len(ids) == report["accepted"], (report, sorted(ids))  # the report read right: these are the accepted lines
            (objections if path.startswith("v1/admin/objections") else notices).update(ids)
    return {"objections": objections, "notices": notices}


def check_applied(system: System, acknowledged: dict[str, set[tuple[str, str]]]) -> None:
    """Each in the consent state (the row `/v1/user/state?user_id=` of the consent service),
    objection events enforced by ingest, within the deadline. A user the fuzz sent more events
    than a row keeps in full (64, "Bounded rows" in docs/reliability.md) has the older ones
    folded: applied when the row holds their digest, enforced when none of them is pending."""
    from consentry.domain.consent import was_folded

    def missing() -> list[str]:
        out = []
        for user in sorted({u for u, _ in acknowledged["objections"] | acknowledged["notices"]}):
            state = system.consent_row(user)
            history = state.history if state is not None else ()
            enforced = {h.objection_id for h in history if h.enforced_at_us}
            waiting = set(state.pending) | set(state.pending_withdrawals) if state is not None else set()
            enforced |= {o for u, o in acknowledged["objections"] if u == user and was_folded(state, o) and o not in waiting}
            told = {n.notice_id for n in (state.notices if state is not None else ())}
            out += [f"{user}: objection {o}" for u, o in acknowledged["objections"] if u == user and o not in enforced]
            out += [f"{user}: notice {n}" for u, n in acknowledged["notices"] if u == user and n not in told]
        return out

    deadline = time.monotonic() + ENFORCE_DEADLINE_S
    while left := missing():
        assert time.monotonic() < deadline, f"{len(left)} acknowledged by the gateway, not applied within {ENFORCE_DEADLINE_S}s: {left[:10]}"
        time.sleep(0.5)
