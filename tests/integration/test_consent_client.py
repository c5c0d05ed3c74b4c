"""The gateway's consent look-up (services/gateway/consent_client.py) over real HTTP: "no row"
only when the consent service says so for this very user; anything else fails closed.

Once, a 404 meant "no row": a route that did not match (an id with `{` or `}`), an older
consent service, or another service on the configured port all made the gateway take a person
for one with no objection (GET /v1/objections/me, the Idempotency-Key checks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from consentry.domain.model import ObjectionEvent
from consentry.domain.consent import apply_objection
from consentry.wire import encode_consent_state
from services.gateway.consent_client import ConsentClient, ConsentUnavailable
from tests.support.consent_stub import empty_consent_service


ROW = b"<a row of the user asked>"


@contextmanager
def answering(status: int, body: bytes | None) -> Iterator[tuple[str, list[str]]]:
    """A server answering every GET with `status` and `body` (None: the consent service's answer
    for the id asked, with no row; ROW: with a row of that id); yields its URL and the paths it
    was asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            user = parse_qs(urlsplit(self.path).query).get("user_id", ["?"])[0]
            payload = (orjson.dumps({"user_id": user, "row": None}) if body is None
                       else b'{"user_id": ' + orjson.dumps(user) + b', "row": ' + row_of(user) + b"}" if body is ROW else body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        thread.join(timeout=5)


async def read(url: str, user: str):  # type: ignore[no-untyped-def]
    client = ConsentClient(url)
    try:
        return await client.state(user)
    finally:
        await client.close()


def row_of(user: str) -> bytes:
    state = apply_objection(None, ObjectionEvent("o-1", user, "object", 1_700_000_000_000_000, "web"), 1_700_000_000_000_000)
    return encode_consent_state(state)


@pytest.mark.parametrize(
    ("status", "body", "case"),
    [
        (404, b'{"detail": "no consent row for this user"}', "a 404 (a route that did not match, an older consent service)"),
        (404, b"404: Not Found", "aiohttp's own 404"),
        (200, b'{"user_id": "bob", "row": null}', "an answer for another user"),
        (200, b'{"user_id": "alice"}', "an answer without a row field"),
        (200, b"null", "not an object"),
        (200, b'{"user_id": "alice", "row": ' + row_of("bob") + b"}", "another user's row"),
        (200, row_of("alice"), "a bare row (not the look-up's answer)"),
        (400, b'{"detail": "user_id is empty"}', "a refusal"),
        (503, b'{"detail": "recovering"}', "recovering"),
    ],
)
async def test_anything_but_the_consent_services_answer_for_this_user_is_not_no_row(status: int, body: bytes, case: str) -> None:
    with answering(status, body) as (url, _):
        with pytest.raises(ConsentUnavailable):
            await read(url, "alice")


ROUTING_HARD = ["alice", ".", "..", "a/b", "{x}", "a}b", "%2F", "a?b#c", "a b+c", "&user_id=eve", "🙂"]


async def test_the_id_reaches_the_consent_service_whole_and_its_answer_is_read() -> None:
    with answering(200, None) as (url, asked):
        client = ConsentClient(url)
        try:
            for user in ROUTING_HARD:
                assert await client.state(user) is None, user  # the explicit "no row" for this user
        finally:
            await client.close()
    assert [urlsplit(path).path for path in asked] == ["/v1/user/state"] * len(ROUTING_HARD)
    assert [parse_qs(urlsplit(path).query) for path in asked] == [{"user_id": [user]} for user in ROUTING_HARD]
    with answering(200, ROW) as (url, _):
        client = ConsentClient(url)
        try:
            for user in ROUTING_HARD:
                state = await client.state(user)
                assert state is not None and state.user_id == user and [e.objection_id for e in state.history] == ["o-1"], user
        finally:
            await client.close()


async def test_the_gateway_tests_stub_answers_like_the_consent_service() -> None:
    with empty_consent_service() as url:
        assert await read(url, "a/b") is None
