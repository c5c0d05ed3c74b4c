"""What the reliability tests do to a running Consentry, and what they know about it.

A `World` is one run's users: for each, the posts published (and acknowledged by the broker,
with when each delivery was sent), the notices the platform sent them, and the objection
events the system acknowledged (202 from the gateway, or acks for the events published
straight to `objections`, as the import command does). Scripts are generated from a seed;
the checks compare the Delta table and the consent state, read from the consent service
itself, with tests/reliability/oracle.py.

The system runs with the production default, the notice rule on (grace 30 days, EU/EEA), and
every user belongs to one population: told long ago (most; their posts name an EU country,
sometimes none), told recently (within the grace period: their posts wait), never told
(EU posts wait), outside the jurisdictions (posts from elsewhere flow without a notice), and,
in the race scripts, told late (posts first, held, then a notice sent long ago is published:
they are released). Notices of the first two are published, applied and read by ingest
before anything else happens, so the told users' posts are never held.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from consentry.partitioning import home_partition
from consentry.timeutil import format_rfc3339, now_us, parse_rfc3339
from tests.reliability.oracle import DAY_US, EU_EEA, Event, Notice, PostFacts, eligible, objecting_now, required
from tests.support.system import System

TOLD, TOLD_RECENTLY, UNTOLD, OUTSIDE, TOLD_LATE = "told", "told recently", "never told", "outside", "told late"
POPULATIONS = {TOLD: 75, TOLD_RECENTLY: 8, UNTOLD: 7, OUTSIDE: 10}
EU_COUNTRIES = ("FR", "DE", "IT", "ES", "NO")
ELSEWHERE = ("US", "BR", "JP")


class ReceiptLost(AssertionError):
    """Every event acknowledged and applied, but a stamp never reached the consent state although
    its `enforced` or `purged` receipt is in the receipts topic. A defect seen (intermittently)
    while consent workers leave and join under load; docs/reliability.md describes it."""


class EventErased(AssertionError):
    """An acknowledged event the consent changelog held, then lost: a later record of the user's
    row lacks it, so the compacted changelog (and every worker recovering from it) forgets it.
    A stale writer's row: issue 12's consent zombie, seen after a worker stalled past its
    session timeout woke up; docs/reliability.md describes it."""


@dataclass
class UserState:
    user_id: str
    population: str = TOLD
    country: str | None = "FR"  # what the user's posts name (some posts name none)
    posts: dict[str, PostFacts] = field(default_factory=dict)
    raw_posts: dict[str, bytes] = field(default_factory=dict)
    deliveries: dict[str, list[int]] = field(default_factory=dict)  # post_id -> when each acknowledged delivery was sent (µs)
    texts: list[str] = field(default_factory=list)
    events: dict[str, Event] = field(default_factory=dict)  # acknowledged by the system
    raw_events: dict[str, bytes] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)  # acknowledged by the broker
    made: int = 0  # posts made so far: numbers post_ids, also for posts sent concurrently


@dataclass
class World:
    system: System
    rng: random.Random
    tag: str
    users: dict[str, UserState] = field(default_factory=dict)
    posts_partitions: int = 4
    counts: Counter = field(default_factory=Counter)

    def user(self, user_id: str, population: str | None = None) -> UserState:
        if user_id not in self.users:
            population = population or self.rng.choices(list(POPULATIONS), list(POPULATIONS.values()))[0]
            country = self.rng.choice(ELSEWHERE if population == OUTSIDE else EU_COUNTRIES)
            self.users[user_id] = UserState(user_id, population, country)
        return self.users[user_id]

    @property
    def notice_rule(self) -> bool:
        return self.system.notices

    # ------------------------------------------------------------------ clients

    async def __aenter__(self) -> World:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.system.bootstrap, acks="all", linger_ms=2, max_request_size=4 << 20)
        await self.producer.start()
        # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: a request sent
        # on a connection the server is closing at that instant fails with ReadError (no service
        # logs it), and an unkeyed objection cannot be retried blindly.
        self.http = httpx.AsyncClient(
            base_url=self.system.gateway_url, timeout=15, limits=httpx.Limits(max_connections=20, keepalive_expiry=1.0)
        )
        self.consent_http = httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=20))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.http.aclose()
        await self.consent_http.aclose()

    # ------------------------------------------------------------------ notices

    async def tell(self, user: UserState, sent_at_us: int, country: str | None = None) -> None:
        """The platform's notification system sends the user a notice (acknowledged: it counts)."""
        notice = Notice(f"n-{uuid.uuid4().hex}", sent_at_us, country or (user.country if user.country in EU_EEA else "FR"))
        body = {"notice_id": notice.notice_id, "user_id": user.user_id, "notice_version": "2025-05",
                "channel": self.rng.choice(["email", "in_app"]), "sent_at": format_rfc3339(sent_at_us), "country": notice.country}
        await (await self.producer.send(self.system.topics.notices, orjson.dumps(body), key=user.user_id.encode()))
        user.notices.append(notice)
        self.counts["notices"] += 1

    async def tell_everyone(self) -> None:
        """Before anything else: notices for the users told long ago or recently, applied by the
        consent service and read by ingest (so that no post of a told user is ever held)."""
        if not self.notice_rule:
            return
        now = now_us()
        told = [u for u in self.users.values() if u.population in (TOLD, TOLD_RECENTLY) and not u.notices]
        for i in range(0, len(told), 100):
            await asyncio.gather(*(
                self.tell(u, now - self.rng.randrange(31 * DAY_US, 400 * DAY_US) if u.population == TOLD else now - self.rng.randrange(DAY_US, 20 * DAY_US))
                for u in told[i : i + 100]
            ))

        async def applied(user: UserState) -> bool:
            held = {n["notice_id"] for n in (await self.status(user.user_id)).get("notices", [])}
            return {n.notice_id for n in user.notices} <= held

        deadline = asyncio.get_running_loop().time() + 120
        while told:
            results = []
            for i in range(0, len(told), 40):
                results += await asyncio.gather(*(applied(u) for u in told[i : i + 40]))
            told = [u for u, ok in zip(told, results, strict=True) if not ok]
            assert not told or asyncio.get_running_loop().time() < deadline, f"{len(told)} users' notices never applied, e.g. {told[0]}"
            if told:
                await asyncio.sleep(0.3)
        await asyncio.to_thread(self.system.sync_ingest, *self.users)

    # ------------------------------------------------------------------ actions

    def make_post(self, user: UserState, created_at_us: int) -> tuple[PostFacts, bytes]:
        n = user.made
        user.made += 1
        roll = self.rng.random()
        visibility = "public" if roll < 0.85 else self.rng.choice(["friends", "private"])
        minor = self.rng.random() < 0.05
        country = user.country if self.rng.random() < 0.9 else None
        text = f"race-text-{self.tag}-{user.user_id}-{n}-{uuid.uuid4().hex}"
        body = {
            "post_id": f"{user.user_id}-p{n}",
            "user_id": user.user_id,
            "created_at": format_rfc3339(created_at_us),
            "visibility": visibility,
            "text": text,
            "lang": "fr",
            "country": country,
            "author_is_minor": minor,
        }
        facts = PostFacts(body["post_id"], user.user_id, created_at_us, visibility == "public", minor, country)
        user.texts.append(text)
        return facts, orjson.dumps(body)

    async def publish_post(self, user: UserState, created_at_us: int) -> None:
        facts, raw = self.make_post(user, created_at_us)
        await self._send_post(user, facts.post_id, raw)  # acknowledged: from now on it counts
        user.posts[facts.post_id] = facts
        user.raw_posts[facts.post_id] = raw
        self.counts["posts"] += 1

    async def redeliver_post(self, user: UserState) -> None:
        if not user.raw_posts:
            return
        post_id = self.rng.choice(sorted(user.raw_posts))
        await self._send_post(user, post_id, user.raw_posts[post_id])
        self.counts["post re-deliveries"] += 1

    async def _send_post(self, user: UserState, post_id: str, raw: bytes) -> None:
        # Upstream producers use various partitioners: some posts land off their home partition.
        partition = None if self.rng.random() < 0.7 else self.rng.randrange(self.posts_partitions)
        sent = now_us()
        await (await self.producer.send(self.system.topics.posts, raw, key=user.user_id.encode(), partition=partition))
        user.deliveries.setdefault(post_id, []).append(sent)

    async def object_api(self, user: UserState, kind: str = "object") -> None:
        headers = self.system.auth(user.user_id)
        if kind == "object":
            response = await self.http.post("/v1/objections", headers=headers, json={"channel": self.rng.choice(["web", "app", "email", "api"])})
        else:
            response = await self.http.delete("/v1/objections/me", headers=headers)
        assert response.status_code == 202, response.text
        receipt = response.json()
        event = Event(receipt["objection_id"], kind, parse_rfc3339(receipt["received_at"]))
        user.events[event.objection_id] = event
        channel = "api"
        user.raw_events[event.objection_id] = orjson.dumps(
            {"objection_id": event.objection_id, "user_id": user.user_id, "kind": kind, "received_at": receipt["received_at"], "channel": channel}
        )
        self.counts[f"{kind} via gateway"] += 1

    async def import_event(self, user: UserState, kind: str, received_at_us: int) -> None:
        """An event from before the system existed, published as `consentry import` does."""
        event = Event(str(uuid.uuid4()), kind, received_at_us)
        raw = orjson.dumps(
            {"objection_id": event.objection_id, "user_id": user.user_id, "kind": kind, "received_at": format_rfc3339(received_at_us), "channel": "import"}
        )
        await self._send_event(user, raw)
        user.events[event.objection_id] = event
        user.raw_events[event.objection_id] = raw
        self.counts[f"imported {kind}"] += 1

    async def redeliver_event(self, user: UserState) -> None:
        """The same objection event twice more, straight to `objections` (a re-delivery)."""
        if not user.raw_events:
            return
        raw = user.raw_events[self.rng.choice(sorted(user.raw_events))]
        for _ in range(2):
            await self._send_event(user, raw)
        self.counts["objection re-deliveries"] += 2

    async def _send_event(self, user: UserState, raw: bytes) -> None:
        # Mostly the home partition (as the gateway writes); sometimes another one, which the
        # consent service must move home before applying.
        partitions = self.system.partitions
        home = home_partition(user.user_id, partitions)
        partition = home if self.rng.random() < 0.8 else self.rng.randrange(partitions)
        await (await self.producer.send(self.system.topics.objections, raw, key=user.user_id.encode(), partition=partition))

    # ------------------------------------------------------------------ observation

    async def status(self, user_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The user's status document from the consent service itself (`/v1/user/status?user_id=` of any
        running consent worker, which routes to the owner), never the gateway's view: the
        gateway merges the events it acknowledged, so an event the consent service lost would
        still look applied there."""
        deadline = asyncio.get_running_loop().time() + timeout
        last = "no consent worker running"
        while asyncio.get_running_loop().time() < deadline:
            for instance in self.system.running("consent"):
                try:
                    response = await self.consent_http.get(f"{self.system.url(instance)}/v1/user/status", params={"user_id": user_id})
                except httpx.TransportError as exc:
                    last = f"{instance}: {type(exc).__name__}"
                    continue
                if response.status_code == 200:
                    return response.json()
                assert response.status_code == 503, response.text  # recovering, or the owner restarting: retry
                last = f"{instance}: {response.text[:200]}"
            await asyncio.sleep(0.2)
        raise AssertionError(f"consent state of {user_id} unavailable for {timeout}s ({last})")

    async def settled(self, user: UserState) -> bool:
        """Consent applied every acknowledged event and notice of the user, ingest enforced every
        event, and every objection is purged."""
        doc = await self.status(user.user_id)
        history = {item["objection_id"]: item for item in doc["history"]}
        if set(user.events) - set(history):
            return False
        if {n.notice_id for n in user.notices} - {n["notice_id"] for n in doc.get("notices", [])}:
            return False
        return all(item.get("enforced_at") and (item["kind"] != "object" or item.get("purged_at")) for item in history.values())

    async def wait_settled(self, timeout: float = 180.0) -> None:
        pending = [u for u in self.users.values() if u.events or u.notices]
        deadline = asyncio.get_running_loop().time() + timeout
        while pending:
            results = []
            for i in range(0, len(pending), 40):
                results += await asyncio.gather(*(self.settled(u) for u in pending[i : i + 40]))
            pending = [u for u, ok in zip(pending, results, strict=True) if not ok]
            if pending and asyncio.get_running_loop().time() > deadline:
                await self._never_settled(pending)
            if pending:
                await asyncio.sleep(0.5)

    async def _never_settled(self, pending: list[UserState]) -> None:
        """Say what is missing: an acknowledged event or notice the consent state lacks (lost), an
        event ingest never confirmed, or a stamp whose receipt is in the receipts topic but never
        reached the consent state (ReceiptLost: see docs/reliability.md)."""
        receipts: dict[tuple[str, str], set[str]] = {}
        for record in await asyncio.to_thread(self.system.read, self.system.topics.receipts):
            body = orjson.loads(record.value)
            for objection_id in body.get("objection_ids", ()):
                receipts.setdefault((body["user_id"], objection_id), set()).add(body["type"])
        once_held: dict[str, set[str]] = {}  # user -> every event some changelog record of theirs held
        for record in await asyncio.to_thread(self.system.read, self.system.topics.consent_state):
            if record.key is not None and record.value:
                row = orjson.loads(record.value)
                once_held.setdefault(record.key.decode(errors="replace"), set()).update(h["objection_id"] for h in row.get("history", ()))
        lost, erased, unconfirmed, unstamped = [], [], [], []
        for user in pending[:50]:
            doc = await self.status(user.user_id)
            held = {item["objection_id"]: item for item in doc["history"]}
            for i in sorted(set(user.events) - set(held)):
                (erased if i in once_held.get(user.user_id, ()) else lost).append(f"{user.user_id}:{i}")
            lost += [f"{user.user_id}:notice {n.notice_id}" for n in user.notices if n.notice_id not in {x["notice_id"] for x in doc.get("notices", [])}]
            for objection_id, item in held.items():
                for stamp, kind in (("enforced_at", "enforced"), ("purged_at", "purged")):
                    if item.get(stamp) or (stamp == "purged_at" and item["kind"] != "object"):
                        continue
                    where = unstamped if kind in receipts.get((user.user_id, objection_id), ()) else unconfirmed
                    where.append(f"{user.user_id}:{objection_id} ({item['kind']}) not {kind}")
        user = pending[0]
        detail = (f"{len(pending)} users never settled; never applied (in no changelog record): {lost[:5]}; applied, then erased "
                  f"(a later changelog record lacks them): {erased[:5]}; never confirmed by ingest: {unconfirmed[:5]}; receipt in the "
                  f"topic, stamp never applied: {unstamped[:5]}; e.g. {user.user_id}: consent holds {await self.status(user.user_id)}; "
                  f"its records: {await asyncio.to_thread(trace_user, self.system, user.user_id)}")
        if lost or unconfirmed or not (erased or unstamped):
            raise AssertionError(detail)
        if erased:
            raise EventErased(detail)
        raise ReceiptLost(detail)

    async def consent_states(self) -> dict[str, dict[str, Any]]:
        docs = []
        users = list(self.users)
        for i in range(0, len(users), 40):
            docs += await asyncio.gather(*(self.status(u) for u in users[i : i + 40]))
        return {doc["user_id"]: doc for doc in docs}

    def required_posts(self, user: UserState, doc: dict[str, Any] | None, now: int) -> set[str]:
        """The user's posts that must be in the table (oracle.required), by the consent state's stamps."""
        applied_at = max((parse_rfc3339(i["enforced_at"]) for i in (doc or {}).get("history", ()) if i.get("enforced_at")), default=0)
        history = list(user.events.values())
        notices = user.notices if self.notice_rule else None
        return {p for p, facts in user.posts.items() if required(facts, history, applied_at, user.deliveries.get(p, []), notices, now)}

    def wait_released(self, consent: dict[str, dict[str, Any]], timeout: float = 120.0) -> None:
        """Posts held for want of a notice are released by ingest's deferred-posts tick, about every
        second once the notice reached it, not on the path flush_pipeline proves empty: wait for
        the required posts of the users told late."""
        from tests.support.wait import eventually

        now = now_us()
        late = {p for u in self.users.values() if u.population == TOLD_LATE for p in self.required_posts(u, consent.get(u.user_id), now)}
        if late:
            eventually(lambda: not late - {r["post_id"] for r in self.system.training_rows()}, timeout=timeout, what=f"{len(late)} held posts released")


def trace_user(system: System, user_id: str) -> list[str]:
    """Every record keyed by the user in the topics between the gateway, consent and ingest
    (objections, consent changelog, receipts), in order: what a failed check shows."""
    lines = []
    key = user_id.encode()
    for topic in (system.topics.objections, system.topics.consent_state, system.topics.receipts):
        for record in system.read(topic):
            if record.key == key:
                value = orjson.loads(record.value) if record.value else None
                if isinstance(value, dict) and "history" in value:  # a changelog row: its events' stamps only
                    value = [(h.get("objection_id", "")[:8], h.get("kind"), h.get("enforced_at_us") or h.get("enforced_at"), h.get("purged_at_us") or h.get("purged_at"))
                             for h in value["history"]]
                lines.append(f"{topic.rsplit('.', 1)[-1]}[{record.partition}]@{record.offset} t={record.timestamp}: {value}")
    return lines


def flush_pipeline(system: System, posts_partitions: int | None = None, timeout: float = 120.0) -> None:
    """Publish one post on every path (each `posts` partition to each home partition) and wait
    until all are stored: everything published before has then been decided and applied. The
    flush posts come from outside the notice jurisdictions: no notice needed."""
    from tests.support.wait import eventually

    posts_partitions = posts_partitions or system.partitions
    marker = uuid.uuid4().hex[:8]
    wanted: dict[str, tuple[int, bytes, bytes]] = {}
    for home in range(system.partitions):
        n = 0
        while home_partition(f"flush-{marker}-{home}-{n}", system.partitions) != home:
            n += 1
        user = f"flush-{marker}-{home}-{n}"
        for partition in range(posts_partitions):
            post_id = f"{user}-via-{partition}"
            body = {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": "flush", "country": "US"}
            wanted[post_id] = (partition, user.encode(), orjson.dumps(body))
    for post_id, (partition, key, value) in wanted.items():
        system.publish([(key, value)], partition=partition)
    eventually(lambda: set(wanted) <= {r["post_id"] for r in system.training_rows()}, timeout=timeout, what="pipeline flushed")


def check_world(world: World, rows: list[dict[str, Any]], consent: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Compare the table and the consent state with the oracle; return the figures.

    No leak: every stored post is eligible under its user's final history (and notices).
    Nothing lost, strict for every user: every post `oracle.required` names is stored exactly
    once. Every acknowledged event is in the consent state with its received_at, enforced (and
    purged for objections), every acknowledged notice is there too, and nothing else is."""
    stored: dict[str, list[str]] = {}
    counted = Counter(r["post_id"] for r in rows)
    duplicates = sum(c - 1 for c in counted.values() if c > 1)
    for row in rows:
        stored.setdefault(row["user_id"], []).append(row["post_id"])
    leaks: list[str] = []
    lost: list[str] = []
    unapplied: list[str] = []
    required_count = eligible_count = 0
    now = now_us()
    for user in world.users.values():
        doc = consent.get(user.user_id)
        history = list(user.events.values())
        notices = user.notices if world.notice_rule else None
        assert doc is not None or not (user.events or user.notices), f"{user.user_id}: no consent state read"
        if doc is not None:
            applied = {item["objection_id"]: item for item in doc["history"]}
            missing = set(user.events) - set(applied)
            extra = set(applied) - set(user.events)
            unapplied += [f"{user.user_id}:{i}" for i in sorted(missing)]
            assert not extra, f"{user.user_id}: consent holds events nobody sent: {extra}"
            for objection_id, item in applied.items():
                if parse_rfc3339(item["received_at"]) != user.events[objection_id].received_at_us:
                    raise AssertionError(f"{user.user_id}: the consent state holds {objection_id} at another time than acknowledged "
                                         f"({format_rfc3339(user.events[objection_id].received_at_us)}): {doc}; "
                                         f"acknowledged: {sorted(user.events.values(), key=lambda e: e.received_at_us)}; "
                                         f"its records: {trace_user(world.system, user.user_id)}")
                if not item.get("enforced_at"):
                    unapplied.append(f"{user.user_id}:{objection_id} never enforced")
                if item["kind"] == "object" and not item.get("purged_at"):
                    unapplied.append(f"{user.user_id}:{objection_id} never purged")
            assert doc["objected"] == objecting_now(history), (user.user_id, doc)
            held = {n["notice_id"] for n in doc.get("notices", [])}
            unapplied += [f"{user.user_id}:notice {n.notice_id}" for n in user.notices if n.notice_id not in held]
        mine = set(stored.get(user.user_id, ()))
        allowed = {p for p, facts in user.posts.items() if eligible(facts, history, notices, now)}
        leaks += [f"{user.user_id}/{p}" for p in sorted(mine - allowed)]
        must = world.required_posts(user, doc, now)
        lost += [f"{user.user_id}/{p}" for p in sorted(must - mine)]
        required_count += len(must)
        eligible_count += len(allowed)
    if leaks:
        first = world.users[leaks[0].split("/")[0]]
        detail = {"population": first.population, "events": sorted(first.events.values(), key=lambda e: e.received_at_us), "posts": first.posts,
                  "notices": first.notices, "consent": consent.get(first.user_id)}
        raise AssertionError(f"{len(leaks)} posts stored against the rule: {leaks[:10]}; first user: {detail}")
    if lost:
        first = world.users[lost[0].split("/")[0]]
        detail = {"population": first.population, "events": sorted(first.events.values(), key=lambda e: e.received_at_us),
                  "deliveries": first.deliveries, "consent": consent.get(first.user_id)}
        raise AssertionError(f"{len(lost)} required posts missing: {lost[:10]}; first user: {detail}")
    assert not duplicates, f"{duplicates} duplicate post_ids in the table"
    assert not unapplied, f"{len(unapplied)} acknowledged objections or notices not applied: {unapplied[:10]}"
    return {
        "cases": len(world.users),
        "posts": sum(len(u.posts) for u in world.users.values()),
        "objection events": sum(len(u.events) for u in world.users.values()),
        "notices": sum(len(u.notices) for u in world.users.values()),
        "stored": len(rows),
        "eligible": eligible_count,
        "required": required_count,
        "leaks": len(leaks),
        "lost": len(lost),
        "duplicates": duplicates,
    }


class Load:
    """A sustained load in a thread of its own: posts of many users, and now and then an
    objection or a withdrawal through the gateway, retried like a careful client (same
    Idempotency-Key) until the gateway answers 202, while services are killed around it."""

    def __init__(self, world: World, users: int, objectors: float = 0.3, posts_per_wave: int = 8) -> None:
        import threading

        self.world = world
        self.users = [world.user(f"{world.tag}-u{n}z") for n in range(users)]
        self.objectors = self.users[: int(users * objectors)]
        self.posts_per_wave = posts_per_wave
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)
        self.error: BaseException | None = None
        self.retries = 0
        self.superseded = 0  # keyed retries answered 409: another client of the user was acknowledged after them

    @property
    def posts(self) -> int:
        return self.world.counts["posts"]

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "load did not stop"
        if self.error is not None:
            raise self.error

    def wait_progress(self, posts: int, timeout: float = 60.0) -> None:
        """Poll until the load has published `posts` more posts (it keeps going meanwhile)."""
        from tests.support.wait import eventually

        target = self.posts + posts

        def reached() -> bool:
            if self.error is not None:
                raise self.error
            return self.posts >= target

        eventually(reached, timeout=timeout, what=f"load reached {target} posts")

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by stop() / wait_progress()
            self.error = exc

    async def _run(self) -> None:
        world = self.world
        clients: set[asyncio.Task] = set()  # objections in flight, retried on their own
        async with world:
            wave = 0
            while not self._stop.is_set():
                wave += 1
                calls = []
                for user in world.rng.sample(self.users, self.posts_per_wave):
                    from tests.reliability.races import created_choice

                    calls.append(world.publish_post(user, created_choice(world, user)))
                if wave % 4 == 0:
                    user = world.rng.choice(self.objectors)
                    kind = "withdraw" if user.events and world.rng.random() < 0.4 else "object"
                    task = asyncio.create_task(self.object_until_accepted(user, kind))
                    clients.add(task)
                    task.add_done_callback(clients.discard)
                if wave % 7 == 0:
                    calls.append(world.redeliver_post(world.rng.choice(self.users)))
                await asyncio.gather(*calls)
                await asyncio.sleep(0.02)  # pacing, not synchronisation: about 300 posts/s
            await asyncio.gather(*clients)

    async def object_until_accepted(self, user: UserState, kind: str, timeout: float = 120.0) -> None:
        key = uuid.uuid4().hex
        world = self.world
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            headers = {**world.system.auth(user.user_id), "Idempotency-Key": key}
            try:
                if kind == "object":
                    response = await world.http.post("/v1/objections", headers=headers)
                else:
                    response = await world.http.delete("/v1/objections/me", headers=headers)
                if response.status_code == 202:
                    break
                if response.status_code == 409:
                    # Another client of the same user (these clients run concurrently) had a request
                    # acknowledged after this one's first attempt, which the broker may have taken
                    # with its answer lost: the contract's 409. That event, if any, is in the consent
                    # table, and adopt_consent_history judges by the table.
                    self.superseded += 1
                    return
                assert response.status_code in (429, 503), response.text
            except httpx.TransportError:
                response = None  # the gateway is down: retry with the same key
            self.retries += 1
            assert asyncio.get_running_loop().time() < deadline, f"no 202 for {user.user_id} within {timeout}s"
            retry_after = response.headers.get("Retry-After") if response is not None else None
            await asyncio.sleep(float(retry_after) if retry_after else 0.2)  # as a careful client does
        receipt = response.json()
        event = Event(receipt["objection_id"], kind, parse_rfc3339(receipt["received_at"]))
        user.events[event.objection_id] = event
        world.counts[f"{kind} via gateway"] += 1


def adopt_consent_history(world: World, consent: dict[str, dict[str, Any]]) -> int:
    """After gateway crashes the consent table may hold an event whose 202 never reached the
    client (or, retried with its Idempotency-Key, with another received_at): check that every
    acknowledged event is there, then judge by what the table holds. Returns how many events
    the table held that no client saw acknowledged."""
    unseen = 0
    for user in world.users.values():
        doc = consent[user.user_id]
        held = {item["objection_id"]: item for item in doc["history"]}
        missing = set(user.events) - set(held)
        assert not missing, f"{user.user_id}: acknowledged objections lost: {missing}"
        unseen += len(set(held) - set(user.events))
        user.events = {i: Event(i, item["kind"], parse_rfc3339(item["received_at"])) for i, item in held.items()}
    return unseen


def check_purged_leave_nothing(world: World) -> dict[str, int]:
    """`consentry vacuum` on the live table, then: no byte of any user objecting at the end
    (id, post ids, texts) under the table's directory, and no older version shows them."""
    from tests.support.residue import residue, time_travel_residue, vacuum

    uri = world.system.data_dir / "training"
    gone = [u for u in world.users.values() if u.events and objecting_now(list(u.events.values()))]
    vacuum(str(uri))
    needles = {u.user_id for u in gone} | {t for u in gone for t in u.texts} | {p for u in gone for p in u.posts}
    left = residue(uri, needles)
    assert left == [], f"purged data left after vacuum: {left[:10]}"
    travel = time_travel_residue(str(uri), {u.user_id for u in gone})
    assert travel == [], f"older versions still show purged users: {travel[:10]}"
    return {"purged users scanned": len(gone), "bytes left": len(left), "rows back by time travel": len(travel)}


class Churn:
    """Workers joining, leaving, killed or stalled while the load runs, in a thread of its own.

    `steps`: (progress, action, instance): once `progress()` reaches the figure (say, waves of
    a race script played), do the action: "join" (start; the next step does not wait for it to
    be ready, `join()` does), "leave" (SIGTERM:
    a clean exit, the group rebalances), "kill" (SIGKILL; for consent, every other kill also
    deletes its RocksDB directory), "restart" (start again after a kill), "stall:<seconds>"
    (SIGSTOP, then SIGCONT: a paused VM; longer than the session timeout, the group moves
    the worker's partitions away while it sleeps). `under_load` counts the steps done while the
    load was still running."""

    def __init__(self, system: System, steps: list[tuple[int, str, str]], progress: Any) -> None:
        import threading

        self.system = system
        self.steps = steps
        self.progress = progress
        self.load_done = threading.Event()
        self.done: list[str] = []
        self.under_load = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="churn", daemon=True)
        self._kills = 0
        self._started: list[str] = []

    def start(self) -> Churn:
        self._thread.start()
        return self

    def join(self, timeout: float = 300.0) -> None:
        self.load_done.set()
        if self._thread.ident is None:  # never started: no steps
            return
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"churn still running after {timeout}s (done: {self.done})"
        if self.error is not None:
            raise self.error
        for instance in self._started:
            if instance in self.system.processes:
                self.system.wait_ready(instance)

    @property
    def pending(self) -> bool:
        """Steps still to do: the load paces itself meanwhile, so that they happen under load."""
        return len(self.done) < len(self.steps) and self.error is None

    def _main(self) -> None:
        import shutil
        import time

        try:
            for at, action, instance in self.steps:
                while self.progress() < at and not self.load_done.is_set():
                    time.sleep(0.05)
                during = not self.load_done.is_set()
                self._note(f"{action} {instance} at progress {self.progress()}")
                if action == "join":
                    self.system.start(instance, wait=False)
                    self._started.append(instance)
                elif action == "restart":
                    self.system.start(instance)
                elif action == "leave":
                    self.system.leave(instance)
                elif action == "kill":
                    self.system.kill(instance)
                    if instance.startswith("consent") and self._kills % 2 == 0:
                        # A new machine: no local RocksDB, the table comes back from its changelog.
                        shutil.rmtree(self.system.consent_state_dir(instance), ignore_errors=True)
                    self._kills += 1
                elif action.startswith("stall:"):
                    self.system.stall(instance)
                    time.sleep(float(action.split(":", 1)[1]))  # the fault's duration, not a wait for anything
                    self.system.resume(instance)
                else:
                    raise AssertionError(f"unknown churn action {action}")
                self.done.append(f"{action} {instance}")
                self.under_load += during
                self._note(f"{action} {instance} done at progress {self.progress()}{'' if during else ' (after the load)'}")
        except BaseException as exc:  # surfaced by join()
            self._note(f"failed: {exc!r}")
            self.error = exc

    def _note(self, line: str) -> None:
        """The churn's timeline beside the services' logs (kept with them when a test fails)."""
        import datetime

        with open(self.system.log_dir / "churn.log", "a") as log:
            log.write(f"{datetime.datetime.now().isoformat(sep=' ', timespec='milliseconds')} {line}\n")
