"""The dashboard's eyes: scrapes the services' /metrics and /readyz, and tails posts.rejected.

Everything starts on the first dashboard request, not with the gateway: a gateway nobody
watches opens no extra connections. Scrapes are shared by every viewer (at most one per
`MIN_SCRAPE_INTERVAL_S`), and the last few minutes of them are kept for rates and sparklines.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from consentry import patches
from consentry.kafka import assign_whole_topic, client_options
from consentry.scrape import parse_metrics
from consentry.timeutil import now_us
from services.gateway.metrics import metrics_text
from services.gateway.console.view import DOWN, NOT_READY, READY, Health, Snapshot, build_view, latest_rejects, summarize_rejection
from services.gateway.publisher import ObjectionPublisher
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

MIN_SCRAPE_INTERVAL_S = 1.0
KEEP_SNAPSHOTS_S = 330.0  # a little over the 5-minute latency window
PROBE_TIMEOUT_S = 1.5


class DashboardObserver:
    def __init__(self, settings: GatewaySettings, publisher: ObjectionPublisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.urls = {"consent": settings.consent_url, "ingest": settings.ingest_url, "sink": settings.sink_url}
        self.snapshots: collections.deque[Snapshot] = collections.deque()
        self.health: list[Health] = []
        self.rejects = RejectsTail(settings)
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self.rejects.stop()
        if self._client is not None:
            await self._client.aclose()

    async def view(self) -> dict[str, Any]:
        self.rejects.start()
        async with self._lock:
            if not self.snapshots or time.monotonic() - self.snapshots[-1].at >= MIN_SCRAPE_INTERVAL_S:
                await self._sample()
            return build_view(list(self.snapshots), self.health, self.rejects.latest(), now_us())

    async def _sample(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S)
        names = list(self.urls)
        scrapes, probes, gateway_ready = await asyncio.gather(
            asyncio.gather(*(self._scrape(self.urls[n]) for n in names)),
            asyncio.gather(*(self._probe(n, self.urls[n]) for n in names)),
            self.publisher.broker_reachable(),
        )
        services = {name: metrics for name, metrics in zip(names, scrapes, strict=True) if metrics is not None}
        services["gateway"] = parse_metrics(metrics_text().decode())
        at = time.monotonic()
        self.snapshots.append(Snapshot(at, now_us(), services))
        while self.snapshots and at - self.snapshots[0].at > KEEP_SNAPSHOTS_S:
            self.snapshots.popleft()
        gateway = Health("gateway", READY, "broker reachable") if gateway_ready else Health("gateway", NOT_READY, "broker unreachable")
        self.health = [gateway, *probes]

    async def _scrape(self, base: str) -> dict | None:
        assert self._client is not None
        try:
            response = await self._client.get(f"{base}/metrics")
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return parse_metrics(response.text)

    async def _probe(self, name: str, base: str) -> Health:
        assert self._client is not None
        try:
            response = await self._client.get(f"{base}/readyz")
        except httpx.HTTPError as exc:
            return Health(name, DOWN, f"unreachable at {base} ({type(exc).__name__})")
        try:
            detail = str(response.json().get("detail", ""))[:200]
        except ValueError:
            detail = f"HTTP {response.status_code}"
        return Health(name, READY if response.status_code == 200 else NOT_READY, detail)


class RejectsTail:
    """The last few records of posts.rejected, as summaries without the raw value: reads
    from `keep` records before the end of each partition, then follows new ones."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.keep = settings.dashboard_rejects
        self._recent: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def latest(self) -> list[dict[str, Any]]:
        return list(self._recent)

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read %s for the dashboard (%s); retrying in %.0fs", self.settings.topics.posts_rejected, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _follow(self) -> None:
        topic = self.settings.topics.posts_rejected
        connection = client_options(self.settings)
        consumer = AIOKafkaConsumer(
            **connection,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # below the log start (retention): from the oldest kept
            client_id="consentry-gateway-dashboard",
        )
        await consumer.start()
        try:
            tps = await assign_whole_topic(consumer, topic)
            if self.settings.on_embedded_broker:
                ends = await patches.true_end_offsets(connection, tps)
            else:
                ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(ends[tp] - self.keep, 0))
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
                fresh = [s for records in batch.values() for r in records if (s := summarize_rejection(r.value)) is not None]
                if fresh:
                    self._recent = latest_rejects(self._recent + fresh, self.keep)
        finally:
            await consumer.stop()
