"""`consentry up --demo`: a synthetic platform. Posts for a few hundred users flow into
`posts`; some users object (and a few withdraw) through the gateway's HTTP API; a short
summary is printed every few seconds.

Notices (the notice rule stays on): most users were told long ago, so their posts flow at
once; a few are told during the demo, so theirs are deferred and released when the grace
period ends (`consentry up --demo` sets CONSENTRY_NOTICE_GRACE=60s unless it is set); a few
are never told, and their posts wait. Some users are outside the EU/EEA: no notice needed."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console

from consentry.kafka import client_options
from consentry.scrape import scrape, total
from consentry.settings import CommonSettings
from consentry.timeutil import format_rfc3339, now_us
from services.gateway.auth import make_token

DAY_US = 86_400_000_000
NOTICE_VERSION = "v1"

console = Console()


@dataclass
class DemoConfig:
    users: int = 300
    posts_per_second: int = 200
    objection_every_s: float = 2.0
    summary_every_s: float = 5.0
    told_late_after_s: float = 10.0  # when the users told during the demo get their notice
    seed: int = 7


class Demo:
    def __init__(self, settings: CommonSettings, gateway_url: str, metrics_urls: dict[str, str], jwt_secret: str, config: DemoConfig | None = None) -> None:
        self.settings = settings
        self.gateway_url = gateway_url
        self.metrics_urls = metrics_urls
        self.secret = jwt_secret
        self.config = config or DemoConfig()
        self.random = random.Random(self.config.seed)
        self.users = [f"demo-{i:04d}" for i in range(self.config.users)]
        self.minors = set(self.random.sample(self.users, k=max(1, self.config.users // 20)))
        self.objected: set[str] = set()
        # Where each user is, and when they are told: long ago, during the demo, or never.
        shuffled = self.random.sample(self.users, k=len(self.users))
        tenth = max(1, len(shuffled) // 10)
        self.abroad = set(shuffled[:tenth])  # outside the EU/EEA: no notice needed
        self.told_late = shuffled[tenth : 2 * tenth]
        self.never_told = set(shuffled[2 * tenth : 2 * tenth + max(1, tenth // 3)])
        self.told_long_ago = [u for u in shuffled[2 * tenth :] if u not in self.never_told]
        self.country = {u: ("US" if u in self.abroad else self.random.choice(["FR", "DE", "ES", "IT", "NL", "PL"])) for u in self.users}

    async def run(self, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(**client_options(self.settings), acks="all", linger_ms=20)
        await producer.start()
        try:
            await self._notify(producer, self.told_long_ago, now_us() - 60 * DAY_US)
            await asyncio.gather(self._posts(producer, stop), self._objections(stop), self._summaries(stop), self._notify_late(producer, stop))
        finally:
            await producer.stop()

    async def _notify(self, producer: AIOKafkaProducer, users: list[str], sent_at_us: int) -> None:
        """As the platform's notification system would: one notice per user on `notices`."""
        topic = self.settings.topics.notices
        for user in users:
            notice = {
                "notice_id": f"demo-notice-{user}", "user_id": user, "notice_version": NOTICE_VERSION,
                "channel": self.random.choice(["email", "in_app"]), "sent_at": format_rfc3339(sent_at_us), "country": self.country[user],
            }
            await producer.send(topic, orjson.dumps(notice), key=user.encode())
        await producer.flush()

    async def _notify_late(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.config.told_late_after_s)
        except TimeoutError:
            await self._notify(producer, self.told_late, now_us())

    async def _posts(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        n = 0
        topic = self.settings.topics.posts
        while not stop.is_set():
            started = time.monotonic()
            for _ in range(self.config.posts_per_second // 10):
                n += 1
                user = self.random.choice(self.users)
                if n % 97 == 0:  # now and then a malformed message, to show posts.rejected
                    await producer.send(topic, b'{"post_id": "broken", ', key=user.encode())
                    continue
                post = {
                    "post_id": f"demo-post-{n}",
                    "user_id": user,
                    "created_at": format_rfc3339(now_us()),
                    "visibility": self.random.choices(["public", "friends", "private"], weights=[8, 1, 1])[0],
                    "text": f"demo post number {n}",
                    "lang": "en",
                    "country": self.country[user],
                    "author_is_minor": user in self.minors,
                }
                await producer.send(topic, orjson.dumps(post), key=user.encode())
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    async def _objections(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(5)
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=10) as client:
            while not stop.is_set():
                if self.objected and self.random.random() < 0.15:
                    user = self.random.choice(sorted(self.objected))
                    response = await client.delete("/v1/objections/me", headers=self._auth(user))
                    if response.status_code == 202:
                        self.objected.discard(user)
                else:
                    user = self.random.choice(self.users)
                    response = await client.post("/v1/objections", headers=self._auth(user), json={"channel": "web", "reason": "demo"})
                    if response.status_code == 202:
                        self.objected.add(user)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.config.objection_every_s)
                except TimeoutError:
                    pass

    def _auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(self.secret, user)}"}

    async def _summaries(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.config.summary_every_s)
            except TimeoutError:
                pass
            console.print(await asyncio.to_thread(self.summary), soft_wrap=True)  # one line, whatever the width

    def summary(self) -> str:
        ingest = scrape(self.metrics_urls["ingest"])
        sink = scrape(self.metrics_urls["sink"])
        consent = scrape(self.metrics_urls["consent"])
        posts_in = total(ingest, "consentry_ingest_posts_in_total", source="posts")
        dropped = {r: int(total(ingest, "consentry_ingest_dropped_total", reason=r)) for r in ("objected", "not_public", "minor")}
        return (
            f"[bold]posts in[/] {int(posts_in)}  "
            f"[green]accepted[/] {int(total(ingest, 'consentry_ingest_accepted_total'))}  "
            f"[cyan]deferred[/] {int(total(ingest, 'consentry_ingest_deferred_total'))} "
            f"(waiting {int(total(ingest, 'consentry_ingest_deferred_posts'))}, "
            f"released {int(total(ingest, 'consentry_ingest_deferred_released_total'))}, "
            f"dropped {int(total(ingest, 'consentry_ingest_deferred_dropped_total'))})  "
            f"[yellow]dropped[/] objected={dropped['objected']} not_public={dropped['not_public']} minor={dropped['minor']}  "
            f"[red]rejected[/] {int(total(ingest, 'consentry_ingest_rejected_total'))}  "
            f"stored {int(total(sink, 'consentry_sink_rows_appended_total'))}  "
            f"[magenta]purged[/] {int(total(sink, 'consentry_sink_rows_purged_total'))} rows / "
            f"{int(total(consent, 'consentry_objection_purge_seconds_count'))} objections"
        )
