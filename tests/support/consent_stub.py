"""A consent service that has applied nothing yet: every user's row is absent (404), over
real HTTP. For gateway tests that need the look-up to answer without running faust."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _NoRows(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b'{"detail": "no consent row for this user"}'
        self.send_response(404 if self.path.startswith("/v1/users/") else 503)
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
