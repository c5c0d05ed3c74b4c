"""A request id on every gateway request: the caller's `X-Request-ID` when it is sane (1 to 128
characters of letters, digits and `._:-`), a new one otherwise. It is echoed in the response's
`X-Request-ID` header and carried by every log line logged while the request is served
(consentry.logs.bound), so an operator can go from a response to its lines."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentry.logs import bound

HEADER = b"x-request-id"
SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            if SANE.fullmatch(value):
                return value.decode("ascii")
            break  # anything else (too long, spaces, control characters) is replaced, never logged
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        with bound(request_id=request_id):
            await self.app(scope, receive, with_header)
