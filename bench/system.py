"""Consentry's services as real processes (`python -m consentry_cli NAME`), with their default
settings, under a topic prefix of their own, for the whole-system measurements."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from bench.common import PARTITIONS, ROOT, free_port, wait_ready
from consentry.kafka import ensure_topics
from consentry.settings import CommonSettings

SECRET = "bench-secret-not-for-production-0123456789"


class Services:
    def __init__(self, bootstrap: str, prefix: str, root: Path, extra_env: dict[str, str] | None = None,
                 partitions: int = PARTITIONS) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.root = root
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("consent", "ingest", "sink", "gateway", "audit-writer")}
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CONSENTRY_BROKER_FLAVOR": "tansu",
            "CONSENTRY_TOPIC_PREFIX": prefix,
            "CONSENTRY_PARTITIONS": str(partitions),
            "CONSENTRY_DATA_DIR": str(root / "var"),
            "CONSENTRY_CONSENT_PORT": str(self.ports["consent"]),
            "CONSENTRY_CONSENT_URL": f"http://127.0.0.1:{self.ports['consent']}",
            "CONSENTRY_INGEST_PORT": str(self.ports["ingest"]),
            "CONSENTRY_SINK_PORT": str(self.ports["sink"]),
            "GATEWAY_PORT": str(self.ports["gateway"]),
            "CONSENTRY_AUDIT_PORT": str(self.ports["audit-writer"]),
            "CONSENTRY_JWT_SECRET": SECRET,
            **(extra_env or {}),
        }
        self.settings = CommonSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions, broker_flavor="tansu")
        self.topics = self.settings.topics
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.settings))

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, *services: str, wait: bool = True, timeout: float = 120) -> None:
        for name in services:
            log = open(self.log_dir / f"{name}.log", "ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "consentry_cli", name], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait:
            for name in services:
                self.wait_ready(name, timeout)

    def wait_ready(self, service: str, timeout: float = 120) -> float:
        return wait_ready(self.processes[service], self.url(service), service, time.monotonic() + timeout,
                          lambda: self.log(service)[-3000:])

    def pid(self, service: str) -> int:
        return self.processes[service].pid

    def log(self, service: str) -> str:
        path = self.log_dir / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        stopping = []
        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                stopping.append(process)
        deadline = time.monotonic() + timeout
        for process in stopping:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
