"""RS256 tokens from a platform's identity provider, checked against its JWKS (a file, or
a URL served here by a local HTTP server), next to the HS256 default."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.gateway.auth import make_token
from services.gateway.settings import DEV_SECRET
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import user_token
from tests.support.ports import free_port


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(key: rsa.RSAPrivateKey, kid: str) -> dict:
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}


def idp_token(key: rsa.RSAPrivateKey, kid: str, user: str, **claims: object) -> str:
    now = int(time.time())
    payload = {"sub": user, "iat": now, "exp": now + 300, "aud": "consentry", "iss": "https://id.example", **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def post_objection(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/objections", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def jwks_server(idp_key: rsa.RSAPrivateKey) -> Iterator[str]:
    document = json.dumps(jwks(idp_key, "k1")).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        thread.join()


def test_rs256_tokens_are_checked_against_a_jwks_file(start_gateway: StartGateway, idp_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(idp_key, "k1")))
    url, _settings = start_gateway(jwks_file=path, jwt_audience="consentry", jwt_issuer="https://id.example")

    accepted = post_objection(url, idp_token(idp_key, "k1", "alice"))
    assert accepted.status_code == 202 and accepted.json()["user_id"] == "alice"

    assert post_objection(url, idp_token(new_key(), "k1", "alice")).status_code == 401  # not the provider's key
    assert post_objection(url, idp_token(idp_key, "k2", "alice")).status_code == 401  # unknown key id
    assert post_objection(url, idp_token(idp_key, "k1", "alice", aud="another-app")).status_code == 401
    assert post_objection(url, idp_token(idp_key, "k1", "alice", iss="https://evil.example")).status_code == 401
    assert post_objection(url, idp_token(idp_key, "k1", "alice", exp=int(time.time()) - 10)).json() == {"detail": "token expired"}
    assert post_objection(url, user_token("alice", issuer="https://id.example")).status_code == 202  # the people's HS256 keys still work beside it


def test_a_rotated_key_in_the_jwks_file_is_picked_up(start_gateway: StartGateway, idp_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(idp_key, "k1")))
    url, _settings = start_gateway(jwks_file=path, jwt_audience="consentry", jwt_issuer="https://id.example")
    rotated = new_key()
    assert post_objection(url, idp_token(rotated, "k2", "bob")).status_code == 401
    path.write_text(json.dumps(jwks(rotated, "k2")))
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even within the same clock tick
    assert post_objection(url, idp_token(rotated, "k2", "bob")).status_code == 202


def test_rs256_tokens_are_checked_against_a_jwks_url(start_gateway: StartGateway, idp_key: rsa.RSAPrivateKey, jwks_server: str) -> None:
    # The identity provider alone signs people's and operators' tokens: no HS256 keys of theirs.
    url, _settings = start_gateway(
        jwks_url=jwks_server, jwt_audience="consentry", jwt_issuer="https://id.example", jwt_secret=DEV_SECRET, user_keys=None, admin_keys=None
    )
    assert post_objection(url, idp_token(idp_key, "k1", "carol")).status_code == 202
    assert post_objection(url, idp_token(new_key(), "k1", "carol")).status_code == 401
    # With an identity provider, the public development secret opens nothing.
    assert post_objection(url, make_token(DEV_SECRET, "carol")).status_code == 401
    assert post_objection(url, make_token(DEV_SECRET, "carol", issuer="https://id.example")).status_code == 401


def test_an_rs256_token_is_refused_when_no_jwks_is_configured(start_gateway: StartGateway, idp_key: rsa.RSAPrivateKey) -> None:
    url, _settings = start_gateway()
    refused = post_objection(url, idp_token(idp_key, "k1", "dave"))
    assert refused.status_code == 401 and "unsupported signing algorithm" in refused.json()["detail"]
