"""Every gateway request has a request id: the caller's sane `X-Request-ID` or a new one, echoed
in the response and carried by every log line of the request (real HTTP, real broker)."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from consentry.logs import ContextFilter, formatter, user_ref
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import user_token


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The gateway's lines as CONSENTRY_LOG_FORMAT=json writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    handler.addFilter(ContextFilter("gateway"))
    logger = logging.getLogger("services.gateway")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_sane_request_id_is_kept_echoed_and_in_the_objection_log_line(start_gateway: StartGateway, json_lines: io.StringIO) -> None:
    url, _ = start_gateway()
    user = f"u-{uuid.uuid4().hex[:8]}"
    request_id = f"edge-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{url}/v1/objections", json={}, headers={"Authorization": f"Bearer {user_token(user)}", "X-Request-ID": request_id}
    )

    assert response.status_code == 202 and response.headers["X-Request-ID"] == request_id
    objection_id = response.json()["objection_id"]
    [line] = [e for e in lines(json_lines) if e.get("objection_id") == objection_id]
    assert line["request_id"] == request_id and line["user"] == user_ref(user) and line["service"] == "gateway"
    assert isinstance(line["partition"], int) and isinstance(line["offset"], int)
    assert user not in json_lines.getvalue()  # the raw id is never logged


@pytest.mark.parametrize("given", [None, "x" * 129, "two words", "new\\nline"])
def test_a_missing_or_insane_request_id_is_replaced_by_a_new_one(start_gateway: StartGateway, given: str | None) -> None:
    url, _ = start_gateway()
    headers = {} if given is None else {"X-Request-ID": given}
    first = httpx.get(f"{url}/healthz", headers=headers).headers["X-Request-ID"]
    second = httpx.get(f"{url}/healthz", headers=headers).headers["X-Request-ID"]

    assert first != second and first != given and len(first) == 32


def test_a_refused_request_has_a_request_id_too(start_gateway: StartGateway) -> None:
    url, _ = start_gateway()
    response = httpx.post(f"{url}/v1/objections", json={})  # no token: 401

    assert response.status_code == 401 and response.headers["X-Request-ID"]
