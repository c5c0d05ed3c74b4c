"""Request bodies have a size limit: a person's objection is a few hundred bytes, and no
body, declared or streamed, is read past the limit (413 with a message instead)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BULK_PREFIX = "/v1/admin/"  # bulk imports (JSON Lines) get the larger limit


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_bulk_bytes: int) -> None:
        self.app, self.max_bytes, self.max_bulk_bytes = app, max_bytes, max_bulk_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bulk_bytes if scope["path"].startswith(BULK_PREFIX) else self.max_bytes
        detail = f"request body too large: the limit is {limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send, detail)
        seen = 0
        exceeded = False

        async def limited() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body without Content-Length: stop reading it
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answer(message: Message) -> None:
            # The app saw a cut body and answers something; the client gets the real reason.
            if not exceeded:
                return await send(message)
            if message["type"] == "http.response.start":
                await _too_large(send, detail)

        await self.app(scope, limited, answer)


async def _too_large(send: Send, detail: str) -> None:
    body = b'{"detail":"' + detail.encode() + b'"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
