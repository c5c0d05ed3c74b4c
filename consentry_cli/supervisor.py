"""`consentry up`: the embedded broker, the topics, and the four services as supervised
processes, restarted when they crash and all stopped on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

SERVICES = ("consent", "ingest", "sink", "gateway", "audit-writer")  # audit-writer: `consentry audit-writer`


@dataclass
class Child:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_file: object = field(default=None, repr=False)


class Supervisor:
    def __init__(self, env: dict[str, str], log_dir: Path, services: tuple[str, ...] = SERVICES) -> None:
        self.env = env
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children = [
            Child(name, [sys.executable, "-m", "consentry_cli", name], log_dir / f"{name}.log") for name in services
        ]

    def _spawn(self, child: Child) -> None:
        child.log_file = open(child.log_path, "ab")
        child.process = subprocess.Popen(
            child.command, env=self.env, stdout=child.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.info("started %s (pid %d), log: %s", child.name, child.process.pid, child.log_path)

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def check(self) -> list[str]:
        """Restart crashed services with a growing back-off; return the ones restarted."""
        restarted = []
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.process.poll() is None:
                continue
            if child.next_start == 0.0:
                delay = min(2 ** child.restarts * 0.5, 30.0)
                child.next_start = now + delay
                log.error("%s exited with code %s; restarting in %.1fs (see %s)", child.name, child.process.returncode, delay, child.log_path)
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                self._spawn(child)
                restarted.append(child.name)
        return restarted

    def stop(self, timeout: float = 15.0) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()


def wait_ready(
    urls: dict[str, str], timeout: float = 90.0, supervisor: Supervisor | None = None, stop: threading.Event | None = None
) -> None:
    """Poll each service's readiness URL until all answer 200, or raise with the laggards."""
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline and not (stop and stop.is_set()):
            for name, url in list(pending.items()):
                try:
                    if client.get(url).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if supervisor is not None:
                supervisor.check()
            time.sleep(0.2)
    if pending and not (stop and stop.is_set()):
        raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
