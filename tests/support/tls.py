"""A real TLS terminator (Debian's stunnel) in front of the embedded broker, for the Kafka
security tests, and the throwaway certificates it needs (made with `cryptography`).

Tansu 0.6.0 speaks PLAINTEXT only (its `--cert` option accepts a file but serves no TLS), so
the tests run it advertising the terminator's address: every connection a client opens (the
bootstrap, the partition leaders, the group coordinator) goes through TLS.
scripts/ensure-stunnel.sh installs stunnel (`make test` calls it).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consentry_cli.broker import EmbeddedBroker
from tests.support.ports import free_port

STUNNEL = "stunnel4" if shutil.which("stunnel4") else "stunnel"


@dataclass(frozen=True)
class Pki:
    """One CA, a broker certificate for 127.0.0.1 and localhost, and a client certificate whose
    key is encrypted with the password in `client_key_password`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_password: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, password: bytes | None = None) -> None:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    path.chmod(0o600)


def make_pki(directory: Path, name: str = "test") -> Pki:
    """A throwaway PKI in `directory` (valid for a day)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"consentry {name} CA")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = leaf("consentry-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    pem = serialization.Encoding.PEM
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_key_password=directory / "client.key.password",
    )
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    _write_key(server_key, pki.server_key)
    pki.client_cert.write_bytes(client.public_bytes(pem))
    password = f"key-password-{name}"
    pki.client_key_password.write_text(password + "\n")  # as `echo pw > file` writes it
    _write_key(client_key, pki.client_key, password.encode())
    return pki


class Stunnel:
    """stunnel accepting TLS on 127.0.0.1:`port` and forwarding the bytes to `upstream`.
    `require_client_cert`: mutual TLS, the client's certificate checked against `pki.ca`."""

    def __init__(self, pki: Pki, port: int, upstream: str, directory: Path, require_client_cert: bool = False) -> None:
        assert shutil.which(STUNNEL), f"{STUNNEL} is missing: run scripts/ensure-stunnel.sh (make test does)"
        self.port = port
        self.directory = directory
        config = [
            "foreground = yes",
            "pid =",
            "debug = notice",
            f"output = {directory / 'stunnel.log'}",
            "[kafka]",
            f"accept = 127.0.0.1:{port}",
            f"connect = {upstream}",
            f"cert = {pki.server_cert}",
            f"key = {pki.server_key}",
        ]
        if require_client_cert:
            config += [f"CAfile = {pki.ca}", "requireCert = yes", "verifyChain = yes"]
        self.config = directory / "stunnel.conf"
        self.config.write_text("\n".join(config) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self._process = subprocess.Popen([STUNNEL, str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:  # poll with a deadline until it accepts connections
            if self._process.poll() is not None:
                raise RuntimeError(f"stunnel exited with {self._process.returncode}: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stunnel not listening on {self.port} within {timeout}s: {self.log()[-2000:]}") from None
                time.sleep(0.05)

    def log(self) -> str:
        path = self.directory / "stunnel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class SecuredBroker:
    """The embedded broker as clients of a secured cluster see it: `bootstrap` and the
    CONSENTRY_KAFKA_* settings (`env`) that reach it."""

    bootstrap: str
    env: dict[str, str]
    pki: Pki
    plain: str  # the broker's own PLAINTEXT address (it only redirects to `bootstrap`)

    def settings_kwargs(self, **overrides: str) -> dict[str, str]:
        """`env` as CommonSettings keyword arguments (field names)."""
        values = {**self.env, **{k: v for k, v in overrides.items()}}
        return {name.removeprefix("CONSENTRY_").lower(): value for name, value in values.items()}


@contextmanager
def tls_broker(directory: Path, log_path: Path | None = None) -> Iterator[SecuredBroker]:
    """The embedded broker behind stunnel with mutual TLS: SSL with the CA, a client
    certificate and its encrypted key (password from a file)."""
    pki = make_pki(directory / "pki", "tls")
    tls_port = free_port()
    with EmbeddedBroker(free_port(), log_path=log_path, advertised=f"127.0.0.1:{tls_port}") as broker:
        stunnel = Stunnel(pki, tls_port, broker.bootstrap, directory, require_client_cert=True)
        stunnel.start()
        try:
            yield SecuredBroker(
                bootstrap=f"127.0.0.1:{tls_port}",
                env={
                    "CONSENTRY_KAFKA_SECURITY_PROTOCOL": "SSL",
                    "CONSENTRY_KAFKA_SSL_CAFILE": str(pki.ca),
                    "CONSENTRY_KAFKA_SSL_CERTFILE": str(pki.client_cert),
                    "CONSENTRY_KAFKA_SSL_KEYFILE": str(pki.client_key),
                    "CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE": str(pki.client_key_password),
                },
                pki=pki,
                plain=broker.bootstrap,
            )
        finally:
            stunnel.stop()
