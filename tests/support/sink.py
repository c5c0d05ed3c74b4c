"""The training sink inside the test process, on the real broker and a real Delta table.

A `SinkWorker` is started and stopped as its process would be (`consentry.runner.serve`
without the signal handlers), so a test can stop it, copy or replace the table, and start a
new one on the same consumer group: what an operator's restart does.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from consentry.domain.model import Post, PurgeMarker
from consentry.kafka import ensure_topics
from consentry.partitioning import home_partition
from consentry.wire import encode_purge_marker, encode_training_post
from services.sink.settings import SinkSettings
from services.sink.store import DeltaTrainingStore
from services.sink.worker import SinkWorker
from tests.support.kafka import produce
from tests.support.ports import free_port

CREATED_US = 1_748_340_000_000_000  # 2025-05-27T10:00:00Z


def sink_settings(bootstrap: str, flavor: str, root: Path, partitions: int = 2, **extra: Any) -> SinkSettings:
    return SinkSettings(
        kafka_bootstrap_servers=bootstrap,
        broker_flavor=flavor,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}-",
        partitions=partitions,
        data_dir=root / "var",
        sink_port=free_port(),
        sink_flush_seconds=0.2,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        **extra,
    )


async def create_sink_topics(settings: SinkSettings) -> None:
    topics = settings.topics
    await ensure_topics(settings, [s for s in topics.specs() if s.name in (topics.training_posts, topics.receipts, topics.consent_state, topics.lineage, topics.run_users)])


def user_in(partition: int, partitions: int, stem: str) -> str:
    """A user whose home partition is `partition`."""
    n = 0
    while home_partition(f"{stem}-{n}", partitions) != partition:
        n += 1
    return f"{stem}-{n}"


def post_message(post_id: str, user: str, created_us: int = CREATED_US, ingested_us: int | None = None) -> bytes:
    return encode_training_post(Post(post_id, user, created_us, "public", f"text of {post_id}"), ingested_us or created_us + 1_000_000)


def purge_message(user: str, objection_id: str = "o-1") -> bytes:
    return encode_purge_marker(PurgeMarker(user, (objection_id,), CREATED_US + 5_000_000))


async def publish(settings: SinkSettings, *messages: tuple[str, bytes]) -> None:
    """(user, training.posts value) in order, each into its user's home partition."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for user, value in messages:
        by_partition.setdefault(home_partition(user, settings.partitions), []).append((user.encode(), value))
    for partition, items in by_partition.items():
        await produce(settings.bootstrap_servers, settings.topics.training_posts, items, partition=partition)


class RunningSink:
    """`async with RunningSink(settings) as sink:` a started sink worker, stopped cleanly at exit."""

    def __init__(self, settings: SinkSettings) -> None:
        self.worker = SinkWorker(settings)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningSink:
        await self.worker.start()
        self._task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.worker._stopping.set()
        assert self._task is not None
        try:
            await asyncio.wait_for(self._task, 30)
        finally:
            await self.worker.stop()


def stored_ids(settings: SinkSettings) -> set[str]:
    uri = settings.store_uri
    if not Path(uri).exists():
        return set()
    return set(DeltaTrainingStore(uri).read(["post_id"]).column("post_id").to_pylist())


class SinkProcesses:
    """Several training sinks as processes (`consentry sink`) on one table and one consumer
    group, as a deployment scales them; `kill` is kill -9. Logs under `log_dir`."""

    def __init__(self, settings: SinkSettings, log_dir: Path, **env: str) -> None:
        import os

        self.settings = settings
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CONSENTRY_BROKER_FLAVOR": settings.broker_flavor, "CONSENTRY_TOPIC_PREFIX": settings.topic_prefix,
            "CONSENTRY_PARTITIONS": str(settings.partitions), "CONSENTRY_DATA_DIR": str(settings.data_dir),
            "TRAINING_STORE_URI": settings.store_uri, "CONSENTRY_TRAINING_STORE_BUCKETS": str(settings.training_store_buckets),
            "CONSENTRY_SINK_FLUSH_SECONDS": str(settings.sink_flush_seconds), "CONSENTRY_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "CONSENTRY_HEARTBEAT_INTERVAL_MS": str(settings.heartbeat_interval_ms), "CONSENTRY_RECONCILE_INTERVAL_S": "0", **env,
        }
        self.processes: dict[str, Any] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str) -> None:
        import subprocess
        import sys

        self.ports[name] = free_port()
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "consentry_cli", "sink"], env={**self.env, "CONSENTRY_SINK_PORT": str(self.ports[name])},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def ready(self, name: str) -> bool:
        import httpx

        process = self.processes[name]
        assert process.poll() is None, f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports[name]}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, name: str) -> None:
        import os
        import signal

        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        import os
        import signal

        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except Exception:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""
