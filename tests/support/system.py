"""The whole system as real processes, for end-to-end tests.

Each System gets its own topic prefix, consumer groups, ports and data directory, so tests
can run side by side and again and again against one broker.

A System can run several workers of consent and ingest (`workers={"consent": 2, "ingest": 2}`):
the first is named after its service ("consent"), the others "consent-2", "consent-3"... Each
has its own port (and, for consent, its own data directory and advertised URL, so that a
look-up is routed to the worker owning the user); they share the service's consumer group.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from consentry.kafka import client_options, ensure_topics
from consentry.scrape import scrape
from consentry.settings import CommonSettings
from consentry.links import make_link_token
from services.gateway.auth import make_token
from tests.support.gateway_settings import ADMIN_KEYS, KEY_SETTINGS, LINK_KEYS, USER_KEYS
from tests.support.kafka import produce, read_all
from tests.support.ports import free_port
from tests.support.wait import eventually

SERVICES = ("consent", "ingest", "sink", "gateway")
SCALABLE = ("consent", "ingest")  # several workers in one group; one sink writes the table, one gateway suffices here


def service_of(instance: str) -> str:
    """"consent-2" -> "consent"; "consent" -> "consent"."""
    match = re.fullmatch(r"([a-z]+)-(\d+)", instance)
    return match.group(1) if match else instance


class System:
    """`notices=False` (the default) turns the notice rule off (CONSENTRY_NOTICE_RULE=off): the
    stories that are not about notices publish no notices. Notice stories, and every guarantee
    test (tests/reliability, with the production default), pass True.

    `workers`: how many workers of consent and ingest `start()` starts (default one each).

    `audit=True` adds the audit writer ("audit-writer") to `start()`: only the tests of the audit
    trail pay for its process."""

    def __init__(
        self, bootstrap: str, flavor: str, root: Path, partitions: int = 4, extra_env: dict[str, str] | None = None, notices: bool = False,
        workers: dict[str, int] | None = None, audit: bool = False,
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:10]}-"
        self.partitions = partitions
        self.root = root
        self.data_dir = root / "var"
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in SERVICES}
        # One key set per purpose, as an operator sets them (docs/operations.md, "Keys and rotation").
        self.user_keys, self.admin_keys, self.link_keys = USER_KEYS, ADMIN_KEYS, LINK_KEYS
        self.key_settings = dict(KEY_SETTINGS)
        self.workers = {service: 1 for service in SERVICES}
        for service, count in (workers or {}).items():
            assert service in SCALABLE and count >= 1, (service, count)
            self.workers[service] = count
        for service, count in self.workers.items():
            for n in range(2, count + 1):
                self.ports[f"{service}-{n}"] = free_port()
        self.notices = notices
        self.audit = audit
        self.ports["audit-writer"] = free_port()
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CONSENTRY_BROKER_FLAVOR": flavor,
            "CONSENTRY_TOPIC_PREFIX": self.prefix,
            "CONSENTRY_PARTITIONS": str(partitions),
            "CONSENTRY_DATA_DIR": str(self.data_dir),
            "CONSENTRY_CONSENT_PORT": str(self.ports["consent"]),
            "CONSENTRY_CONSENT_URL": f"http://127.0.0.1:{self.ports['consent']}",
            "CONSENTRY_INGEST_PORT": str(self.ports["ingest"]),
            "CONSENTRY_INGEST_URL": f"http://127.0.0.1:{self.ports['ingest']}",
            "CONSENTRY_SINK_PORT": str(self.ports["sink"]),
            "CONSENTRY_SINK_URL": f"http://127.0.0.1:{self.ports['sink']}",
            "GATEWAY_PORT": str(self.ports["gateway"]),
            "CONSENTRY_AUDIT_PORT": str(self.ports["audit-writer"]),
            "CONSENTRY_AUDIT_FILES_POLL_S": "1",
            "CONSENTRY_DROP_COUNTS_INTERVAL_S": "1",
            "CONSENTRY_AUDIT_DROP_COUNTS_EVERY_S": "1",
            **{f"CONSENTRY_{name.upper()}": value for name, value in KEY_SETTINGS.items()},
            # Short group timeouts: Tansu hands out a group's first assignment after half of it.
            "CONSENTRY_SESSION_TIMEOUT_MS": "3000",
            "CONSENTRY_HEARTBEAT_INTERVAL_MS": "500",
            "CONSENTRY_SINK_FLUSH_SECONDS": "0.3",
            # Every simulated person calls from 127.0.0.1, and the tests poll statuses far more
            # often than a person would: rate limits have their own tests (test_gateway_api).
            "CONSENTRY_RATE_LIMIT_ADDRESS_PER_S": "0",
            "CONSENTRY_RATE_LIMIT_USER_PER_S": "0",
            "CONSENTRY_NOTICE_RULE": "on" if notices else "off",
            **(extra_env or {}),
        }
        # The Kafka security settings the services get (CONSENTRY_KAFKA_*), the test's clients use too.
        security = {k.removeprefix("CONSENTRY_").lower(): v for k, v in (extra_env or {}).items() if k.startswith("CONSENTRY_KAFKA_")}
        self.settings = CommonSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=self.prefix, partitions=partitions, broker_flavor=flavor, **security)
        self.topics = self.settings.topics
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ processes

    def create_topics(self, posts_partitions: int | None = None) -> None:
        if posts_partitions is not None and posts_partitions != self.partitions:
            other = self.settings.model_copy(update={"partitions": posts_partitions})
            asyncio.run(ensure_topics(other, [s for s in self.topics.specs() if s.name == self.topics.posts]))
        asyncio.run(ensure_topics(self.settings))

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def instances(self) -> list[str]:
        """Every worker `start()` starts: "consent", "consent-2", ..., "ingest", ..., "sink", "gateway"."""
        names = [name if n == 1 else f"{name}-{n}" for name in SERVICES for n in range(1, self.workers[name] + 1)]
        return names + ["audit-writer"] if self.audit else names

    def running(self, service: str) -> list[str]:
        """The instances of `service` whose process is alive."""
        return [name for name, process in self.processes.items() if service_of(name) == service and process.poll() is None]

    def consent_state_dir(self, instance: str = "consent") -> Path:
        """Where that consent worker keeps its RocksDB table."""
        return self._data_dir(instance) / "consent"

    def _data_dir(self, instance: str) -> Path:
        return self.data_dir if instance == service_of(instance) else self.root / f"var-{instance}"

    def _instance_env(self, instance: str) -> dict[str, str]:
        """What differs between two workers of one service: ports, data directory, advertised URL."""
        service = service_of(instance)
        if instance == service:
            return {}
        port = str(self.ports[instance])
        if service == "consent":
            return {"CONSENTRY_CONSENT_PORT": port, "CONSENTRY_CONSENT_ADVERTISED_URL": self.url(instance), "CONSENTRY_DATA_DIR": str(self._data_dir(instance))}
        if service == "ingest":
            return {"CONSENTRY_INGEST_PORT": port}
        raise AssertionError(f"{service} runs one worker here")

    def start(self, *services: str, wait: bool = True, env: dict[str, str] | None = None) -> None:
        """Start services (instances: "consent", "consent-2"...) as processes; `env` adds
        variables for these processes only. No names: every instance of `instances`."""
        names = services or tuple(self.instances)
        for name in names:
            if name not in self.ports:
                self.ports[name] = free_port()
            log = open(self.log_dir / f"{name}.log", "ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "consentry_cli", service_of(name)], env={**self.env, **self._instance_env(name), **(env or {})},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        if wait:
            for name in names:
                self.wait_ready(name)

    def wait_ready(self, service: str, timeout: float = 60.0) -> None:
        def ready() -> bool:
            process = self.processes[service]
            assert process.poll() is None, f"{service} exited with {process.returncode}:\n{self.log(service)[-3000:]}"
            try:
                return httpx.get(f"{self.url(service)}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout=timeout, what=f"{service} ready")

    def wait_exit(self, service: str, timeout: float = 60.0) -> int:
        """Wait for a service to end by itself (a failpoint); return its exit code."""
        process = self.processes.pop(service)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.processes[service] = process
            raise AssertionError(f"{service} still running after {timeout}s") from None

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(service)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def leave(self, service: str, timeout: float = 30.0) -> None:
        """Stop one worker cleanly (SIGTERM): it leaves its group, the others take over."""
        process = self.processes.pop(service)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"{service} did not stop within {timeout}s of SIGTERM") from None

    def stall(self, service: str) -> None:
        """Freeze a worker (SIGSTOP), as a paused VM or a long GC pause does."""
        os.killpg(self.processes[service].pid, signal.SIGSTOP)

    def resume(self, service: str) -> None:
        os.killpg(self.processes[service].pid, signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        stopping = []
        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                stopping.append(process)
        for process in stopping:  # a stalled worker ignores SIGTERM until it runs again
            os.killpg(process.pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout
        for process in stopping:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # a hang on stop is a bug, but never leak processes
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def log(self, service: str) -> str:
        path = self.log_dir / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the outside world

    def token(self, user: str, admin: bool = False, scopes: tuple[str, ...] = ()) -> str:
        """A person's token (the user keys) or, with `admin`, an operator's (the admin keys) with
        `consentry:admin` and `scopes`."""
        if admin:
            return make_token(self.admin_keys, user, admin=True, scopes=scopes)
        return make_token(self.user_keys, user)

    def link(self, user: str, **options: Any) -> str:
        """A one-click link's token, as the notice sender signs it."""
        return make_link_token(self.link_keys, user, **options)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def object(self, user: str, **body: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.gateway_url}/v1/objections", headers=self.auth(user), json=body or None, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def withdraw(self, user: str) -> dict[str, Any]:
        response = httpx.delete(f"{self.gateway_url}/v1/objections/me", headers=self.auth(user), timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def status(self, user: str) -> dict[str, Any]:
        response = httpx.get(f"{self.gateway_url}/v1/objections/me", headers=self.auth(user), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, user: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
        return eventually(lambda: (doc := self.status(user))["status"] == status and doc, timeout=timeout, what=f"{user} {status}")

    def consent_status(self, user: str, timeout: float = 60.0) -> dict[str, Any]:
        """The user's status document as the consent service itself holds it (`/v1/user/status?user_id=`
        of any running consent worker, which routes to the owner), not the gateway's view,
        which merges the events the gateway acknowledged. Retries while consent recovers."""
        return eventually(lambda: self._ask_consent("status", user), timeout=timeout, interval=0.2, what=f"consent state of {user}")

    def _ask_consent(self, view: str, user: str) -> dict[str, Any] | None:
        """`/v1/user/{view}?user_id=` of the first running consent worker that answers (it routes
        to the owner); None while none can (recovering, or the owner is restarting: 503)."""
        for instance in self.running("consent"):
            try:
                response = httpx.get(f"{self.url(instance)}/v1/user/{view}", params={"user_id": user}, timeout=10)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return response.json()
            assert response.status_code == 503, response.text
        return None

    def consent_row(self, user: str, timeout: float = 60.0) -> Any:
        """The user's row (consentry.domain.model.ConsentState, None when there is none) as the
        consent service holds it (`/v1/user/state?user_id=`): with the events folded out of the
        history (bounded rows), which the status document does not list."""
        from consentry.wire import consent_state_from_dict

        def probe() -> tuple[Any] | None:
            doc = self._ask_consent("state", user)
            if doc is None:
                return None
            assert doc["user_id"] == user, doc
            return (consent_state_from_dict(doc["row"]) if doc["row"] is not None else None,)

        return eventually(probe, timeout=timeout, interval=0.2, what=f"consent row of {user}")[0]

    def sync_ingest(self, *users: str, timeout: float = 60.0) -> None:
        """Return once ingest has applied every consent change the consent service had made for
        `users` before the call. Ingest exposes no per-user view, so this files an objection for
        a barrier user in each of their home partitions and waits until ingest enforced it: the
        consent changelog is ordered per partition, so ingest has read everything before it."""
        from consentry.partitioning import home_partition

        homes = {home_partition(user, self.partitions) for user in users}
        barriers = []
        for home in sorted(homes):
            n = 0
            while home_partition(f"barrier-{home}-{n}-{self.prefix}", self.partitions) != home:
                n += 1
            barrier = f"barrier-{home}-{n}-{self.prefix}"
            receipt = self.object(barrier)  # a new objection_id each call, so a new marker to wait for
            barriers.append((barrier, receipt["objection_id"]))

        def enforced(barrier: str, objection_id: str) -> bool:
            return any(item["objection_id"] == objection_id and item.get("enforced_at") for item in self.consent_status(barrier)["history"])

        for barrier, objection_id in barriers:
            eventually(lambda: enforced(barrier, objection_id), timeout=timeout, what=f"ingest caught up ({barrier})")

    def publish(self, messages: list[tuple[bytes | None, bytes]], topic: str | None = None, partition: int | None = None) -> None:
        asyncio.run(produce(client_options(self.settings), topic or self.topics.posts, messages, partition))

    def publish_posts(self, posts: list[dict[str, Any]]) -> None:
        self.publish([(p["user_id"].encode(), orjson.dumps(p)) for p in posts])

    def publish_notices(self, notices: list[dict[str, Any]]) -> None:
        """As the platform's notification system does: default partitioner, key = user_id."""
        self.publish([(n["user_id"].encode(), orjson.dumps(n)) for n in notices], topic=self.topics.notices)

    def tell(self, *users: str, days_ago: float = 40, country: str = "FR", sync: bool = True, timeout: float = 60.0) -> None:
        """The platform tells `users` (a notice sent `days_ago`, by default long enough ago for
        the default grace period); returns once the consent service holds the notices and, with
        `sync`, ingest has read them (sync_ingest: needs the gateway, files barrier objections).
        Without it, a post ingest decides before it read the notice waits and is released at
        its next deferred-posts tick."""
        sent = int(time.time() * 1_000_000) - int(days_ago * 86_400_000_000)
        from consentry.timeutil import format_rfc3339

        ids = {user: f"n-{uuid.uuid4().hex}" for user in users}
        self.publish_notices([{"notice_id": ids[u], "user_id": u, "notice_version": "2025-05", "channel": "email",
                               "sent_at": format_rfc3339(sent), "country": country} for u in users])
        for user in users:
            eventually(lambda: ids[user] in {n["notice_id"] for n in self.consent_status(user).get("notices", [])}, timeout=timeout,
                       what=f"notice of {user} applied")
        if sync:
            self.sync_ingest(*users, timeout=timeout)

    def read(self, topic: str) -> list:
        return asyncio.run(read_all(client_options(self.settings), topic))

    def rejected(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.read(self.topics.posts_rejected)]

    def training_rows(self) -> list[dict[str, Any]]:
        from deltalake import DeltaTable

        path = self.data_dir / "training"
        if not DeltaTable.is_deltatable(str(path)):
            return []
        return DeltaTable(str(path)).to_pyarrow_dataset().to_table().to_pylist()

    def metrics(self, service: str) -> dict:
        return scrape(f"{self.url(service)}/metrics")
