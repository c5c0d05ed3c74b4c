"""Issue 14, as an attacker reads the gateway: each test is one attack, made over real HTTP
against a real gateway (uvicorn, the embedded broker), with tokens forged the way an attacker
would (PyJWT, raw claims), and shown failing. docs/security.md lists them by threat."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.gateway.settings import DEV_SECRET
from tests.support.gateway import StartGateway
from tests.support.kafka import read_topic

# One secret per purpose, as an operator following docs/operations.md sets them.
USER = "people-key-" + uuid.uuid4().hex
ADMIN = "operators-key-" + uuid.uuid4().hex
LINK = "notice-sender-key-" + uuid.uuid4().hex
ISSUER = "https://id.example"
IMPORT = "/v1/admin/objections:import"


def keys(**extra: object) -> dict[str, object]:
    return {"user_keys": f"u1:{USER}", "admin_keys": f"a1:{ADMIN}", "link_keys": f"l1:{LINK}", **extra}


def sign(secret: str, kid: str | None = None, **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 300, **claims}, secret, algorithm="HS256", headers={"kid": kid} if kid else None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def link_token(secret: str, user: str, kid: str | None = None) -> str:
    return sign(secret, kid, sub=user, aud="consentry:object-link", purpose="object", channel="email", jti=uuid.uuid4().hex)


def import_body(*lines: dict) -> bytes:
    return b"\n".join(orjson.dumps(line) for line in lines)


def historical(objection_id: str, user: str, kind: str = "object", received_at: str = "2022-02-03T04:05:06Z") -> dict:
    return {"objection_id": objection_id, "user_id": user, "kind": kind, "received_at": received_at}


def post_import(url: str, token: str, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{url}{IMPORT}", headers={**bearer(token), "Content-Type": "application/x-ndjson"}, content=body, params=params)


def operator(*scopes: str) -> str:
    """An operator's token signed with the operators' key (the bare `admin` too, which older
    gateways read as the admin scope, so the scope is not what such a test measures)."""
    return sign(ADMIN, "a1", sub="ops-1", aud="consentry", scope=" ".join(("admin", "consentry:admin", *scopes)))


def objection_events(settings) -> list[dict]:  # type: ignore[no-untyped-def]
    return [orjson.loads(r.value) for r in read_topic(settings.bootstrap_servers, f"{settings.topic_prefix}objections")]


# ------------------------------------------------------------------ one key for everything


def test_the_notice_senders_link_key_cannot_mint_a_persons_or_an_operators_token(start_gateway: StartGateway) -> None:
    """The notice sender must hold the link key; with it, an attacker who took it signs
    `{"sub": "victim"}` and withdraws the victim's objection, or adds the admin scope and imports."""
    url, settings = start_gateway(jwt_secret=LINK, **keys())
    assert httpx.get(f"{url}/object", params={"token": link_token(LINK, "victim", "l1")}).status_code == 200  # it does sign links

    for kid in ("l1", None):
        for audience in ({"aud": "consentry"}, {}):
            person = sign(LINK, kid, sub="victim", **audience)
            assert httpx.delete(f"{url}/v1/objections/me", headers=bearer(person)).status_code == 401
            assert httpx.post(f"{url}/v1/objections", headers=bearer(person)).status_code == 401
            operator_token = sign(LINK, kid, sub="mallory", scope="admin consentry:admin consentry:import-withdrawals", **audience)
            assert post_import(url, operator_token, import_body(historical("h-1", "victim", "withdraw"))).status_code == 401
    assert objection_events(settings) == []


def test_a_persons_key_never_makes_an_operator(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(jwt_secret=USER, **keys())
    without_audience = sign(USER, "u1", sub="mallory", scope="admin consentry:admin")
    assert post_import(url, without_audience, import_body(historical("h-2", "alice"))).status_code in (401, 403)
    escalated = sign(USER, "u1", sub="mallory", aud="consentry", scope="admin consentry:admin")
    refused = post_import(url, escalated, import_body(historical("h-1", "alice")))
    assert refused.status_code == 403, refused.text
    assert httpx.get(f"{url}/dashboard/data", headers=bearer(escalated)).status_code == 403
    assert post_import(url, operator(), import_body(historical("h-1", "alice"))).status_code == 200


def test_with_an_identity_provider_the_development_secret_opens_no_link(start_gateway: StartGateway, tmp_path: Path) -> None:
    """Links and their CSRF key were still checked with the public development secret: a
    forged link read anyone's status page and filed objections in their name."""
    idp = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(idp.public_key())), "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    url, settings = start_gateway(jwks_file=path, jwt_audience="consentry", jwt_issuer=ISSUER, jwt_secret=DEV_SECRET, link_keys=f"l1:{LINK}")

    forged = link_token(DEV_SECRET, "victim")
    assert httpx.get(f"{url}/object", params={"token": forged}).status_code == 400
    assert httpx.get(f"{url}/object/status", params={"token": forged}).status_code == 400
    # The CSRF half of the forgery: a form token made with the key derived from the dev secret.
    csrf_key = hmac.new(DEV_SECRET.encode(), b"consentry one-click csrf v1", hashlib.sha256).digest()
    claims = jwt.decode(forged, options={"verify_signature": False})
    nonce = "n" * 22
    mac = hmac.new(csrf_key, f"{claims['jti']}\x00victim\x00{nonce}".encode(), hashlib.sha256).digest()
    form = {"token": forged, "csrf": f"{nonce}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}", "lang": "en"}
    assert httpx.post(f"{url}/object", data=form, cookies={"consentry_csrf": nonce}).status_code == 400
    assert objection_events(settings) == []

    assert httpx.get(f"{url}/object", params={"token": link_token(LINK, "victim", "l1")}).status_code == 200


# ------------------------------------------------------------------ audience, issuer, scopes


def test_hs256_tokens_must_name_this_service_as_audience_and_its_issuer(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(jwt_secret=USER, jwt_issuer=ISSUER, **keys())

    def post(token: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/objections", headers=bearer(token))

    assert post(sign(USER, "u1", sub="alice")).status_code == 401  # no audience: any application's token
    assert post(sign(USER, "u1", sub="alice", aud="another-app", iss=ISSUER)).status_code == 401
    assert post(sign(USER, "u1", sub="alice", aud="consentry")).status_code == 401  # no issuer
    assert post(sign(USER, "u1", sub="alice", aud="consentry", iss="https://evil.example")).status_code == 401
    accepted = post(sign(USER, "u1", sub="alice", aud="consentry", iss=ISSUER))
    assert accepted.status_code == 202, accepted.text


def test_another_applications_token_from_the_same_identity_provider_is_no_operator_here(start_gateway: StartGateway, tmp_path: Path) -> None:
    idp = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(idp.public_key())), "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    url, settings = start_gateway(jwks_file=path, jwt_issuer=ISSUER)

    def idp_token(**claims: object) -> str:
        now = int(time.time())
        return jwt.encode({"sub": "ops-1", "iat": now, "exp": now + 300, "iss": ISSUER, **claims}, idp, algorithm="RS256", headers={"kid": "k1"})

    body = import_body(historical("h-1", "alice"))
    assert post_import(url, idp_token(scope="admin consentry:admin"), body).status_code == 401  # names no audience
    assert post_import(url, idp_token(aud="another-app", scope="admin consentry:admin"), body).status_code == 401
    assert post_import(url, idp_token(aud="consentry", scope="admin"), body).status_code == 403  # a bare `admin` is another app's
    assert objection_events(settings) == []
    assert post_import(url, idp_token(aud="consentry", scope="consentry:admin"), body).status_code == 200


def test_a_token_whose_subject_is_not_a_canonical_user_id_is_refused(start_gateway: StartGateway) -> None:
    url, settings = start_gateway(jwt_secret=USER, **keys())
    for sub in ("Jose\u0301", "alice ", "al\u200bice", "bob\x07"):
        token = sign(USER, "u1", sub=sub, aud="consentry")
        status = httpx.get(f"{url}/v1/objections/me", headers=bearer(token))
        assert status.status_code == 401 and "canonical" in status.json()["detail"], (sub, status.text)
        assert httpx.post(f"{url}/v1/objections", headers=bearer(token)).status_code == 401
    assert objection_events(settings) == []
    assert httpx.post(f"{url}/v1/objections", headers=bearer(sign(USER, "u1", sub="Alice", aud="consentry"))).json()["user_id"] == "Alice"


# ------------------------------------------------------------------ open doors


def test_the_dashboard_data_is_for_operators_only(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(jwt_secret=ADMIN, **keys())
    assert httpx.get(f"{url}/dashboard/data").status_code == 401
    assert httpx.get(f"{url}/dashboard/data", headers=bearer(sign(USER, "u1", sub="alice", aud="consentry"))).status_code in (401, 403)
    assert httpx.get(f"{url}/dashboard/data", headers=bearer(operator()), timeout=30).status_code == 200


def test_rate_limits_follow_the_client_a_trusted_proxy_names_and_ignore_an_untrusted_forwarded_for(start_gateway: StartGateway) -> None:
    limits = {"rate_limit_address_per_s": 0.001, "rate_limit_address_burst": 2}

    def page(url: str, forwarded_for: str) -> int:
        return httpx.get(f"{url}/object", params={"token": "x"}, headers={"X-Forwarded-For": forwarded_for}).status_code

    # Behind a trusted proxy (the gateway sees 127.0.0.1): each client has its own bucket.
    proxied, _ = start_gateway(trusted_proxies="127.0.0.1", **limits)
    assert [page(proxied, "203.0.113.1") for _ in range(3)] == [400, 400, 429]
    assert page(proxied, "203.0.113.2") == 400  # another client behind the same proxy
    # A client cannot buy a fresh bucket by prepending its own X-Forwarded-For: the proxy appends the real address.
    assert page(proxied, "198.51.100.9, 203.0.113.1") == 429

    # No trusted proxy: X-Forwarded-For is anyone's to write, so it is ignored.
    direct, _ = start_gateway(**limits)
    assert [page(direct, f"203.0.113.{n}") for n in range(1, 4)] == [400, 400, 429]


# ------------------------------------------------------------------ admin actions


def test_every_admin_action_is_recorded_with_who_when_what_and_counts(start_gateway: StartGateway) -> None:
    url, settings = start_gateway(jwt_secret=ADMIN, **keys())
    body = import_body(historical("h-1", "alice"), historical("h-2", "bob")) + b"\nnot json"
    assert post_import(url, operator(), body).status_code == 200

    records = [orjson.loads(r.value) for r in read_topic(settings.bootstrap_servers, f"{settings.topic_prefix}consentry.admin-actions")]
    assert [(r["action"], r["phase"], r["actor"]) for r in records] == [("import_objections", "started", "ops-1"), ("import_objections", "completed", "ops-1")]
    done = records[-1]
    assert done["action_id"] == records[0]["action_id"] and done["client"] == "127.0.0.1" and "consentry:admin" in done["scopes"]
    assert {k: done["counts"][k] for k in ("lines", "accepted", "duplicates", "rejected")} == {"lines": 3, "accepted": 2, "duplicates": 0, "rejected": 1}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", done["at"])


def test_importing_a_withdrawal_needs_its_own_scope(start_gateway: StartGateway) -> None:
    url, settings = start_gateway(jwt_secret=ADMIN, **keys())
    body = import_body(historical("h-1", "alice"), historical("h-2", "bob", "withdraw"))
    result = post_import(url, operator(), body).json()
    assert (result["accepted"], result["rejected"]) == (1, 1), result
    assert result["rejected_lines"][0]["line"] == 2 and "consentry:import-withdrawals" in result["rejected_lines"][0]["reason"]
    assert [e["objection_id"] for e in objection_events(settings)] == ["h-1"]
