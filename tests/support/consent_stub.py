"""A consent service that has applied nothing yet: every user's row is absent
(`200 {"user_id": <the id asked>, "row": null}`, as services/consent/views.py answers), over
real HTTP. For gateway tests that need the look-up to answer without running faust."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson


class _NoRows(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        users = parse_qs(url.query).get("user_id", [])
        if url.path == "/v1/user/state" and len(users) == 1:
            status, body = 200, orjson.dumps({"user_id": users[0], "row": None})
        else:
            status, body = 503, b'{"detail": "not a look-up this stub answers"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@contextmanager
def empty_consent_service() -> Iterator[str]:
    """Yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoRows)
    thread = threading.Thread(target=server.serve_forever, name="consent-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
