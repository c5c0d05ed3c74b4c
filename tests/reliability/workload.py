"""What the reliability tests do to a running Consentry, and what they know about it.

A `World` is one run's users: for each, the posts published (and acknowledged by the broker)
and the objection events the system acknowledged (202 from the gateway, or acks for the
events published straight to `objections`, as the import command does). Scripts are
generated from a seed; the checks compare the Delta table and the consent state with
tests/reliability/oracle.py.
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
from tests.reliability.oracle import Event, PostFacts, eligible, objecting_now
from tests.support.system import System

DAY_US = 86_400_000_000


@dataclass
class UserState:
    user_id: str
    posts: dict[str, PostFacts] = field(default_factory=dict)
    raw_posts: dict[str, bytes] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    events: dict[str, Event] = field(default_factory=dict)  # acknowledged by the system
    raw_events: dict[str, bytes] = field(default_factory=dict)
    late: set[str] = field(default_factory=set)  # post_ids published once the user's state settled
    made: int = 0  # posts made so far: numbers post_ids, also for posts sent concurrently


@dataclass
class World:
    system: System
    rng: random.Random
    tag: str
    users: dict[str, UserState] = field(default_factory=dict)
    posts_partitions: int = 4
    counts: Counter = field(default_factory=Counter)

    def user(self, user_id: str) -> UserState:
        return self.users.setdefault(user_id, UserState(user_id))

    # ------------------------------------------------------------------ clients

    async def __aenter__(self) -> World:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.system.bootstrap, acks="all", linger_ms=2, max_request_size=4 << 20)
        await self.producer.start()
        self.http = httpx.AsyncClient(base_url=self.system.gateway_url, timeout=15, limits=httpx.Limits(max_connections=20))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.http.aclose()

    # ------------------------------------------------------------------ actions

    def make_post(self, user: UserState, created_at_us: int) -> tuple[PostFacts, bytes]:
        n = user.made
        user.made += 1
        roll = self.rng.random()
        visibility = "public" if roll < 0.85 else self.rng.choice(["friends", "private"])
        minor = self.rng.random() < 0.05
        text = f"race-text-{self.tag}-{user.user_id}-{n}-{uuid.uuid4().hex}"
        body = {
            "post_id": f"{user.user_id}-p{n}",
            "user_id": user.user_id,
            "created_at": format_rfc3339(created_at_us),
            "visibility": visibility,
            "text": text,
            "lang": "fr",
            "country": "FR",
            "author_is_minor": minor,
        }
        facts = PostFacts(body["post_id"], user.user_id, created_at_us, visibility == "public", minor)
        user.texts.append(text)
        return facts, orjson.dumps(body)

    async def publish_post(self, user: UserState, created_at_us: int, late: bool = False) -> None:
        facts, raw = self.make_post(user, created_at_us)
        await self._send_post(user, facts.post_id, raw)  # acknowledged: from now on it counts
        user.posts[facts.post_id] = facts
        user.raw_posts[facts.post_id] = raw
        if late:
            user.late.add(facts.post_id)
        self.counts["posts"] += 1

    async def redeliver_post(self, user: UserState, late: bool = False) -> None:
        if not user.raw_posts:
            return
        post_id = self.rng.choice(sorted(user.raw_posts))
        await self._send_post(user, post_id, user.raw_posts[post_id])
        if late:
            user.late.add(post_id)
        self.counts["post re-deliveries"] += 1

    async def _send_post(self, user: UserState, post_id: str, raw: bytes) -> None:
        # Upstream producers use various partitioners: some posts land off their home partition.
        partition = None if self.rng.random() < 0.7 else self.rng.randrange(self.posts_partitions)
        await (await self.producer.send(self.system.topics.posts, raw, key=user.user_id.encode(), partition=partition))

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

    async def status(self, user_id: str) -> dict[str, Any]:
        for _ in range(50):
            response = await self.http.get("/v1/objections/me", headers=self.system.auth(user_id))
            if response.status_code == 200:
                return response.json()
            assert response.status_code == 503, response.text  # consent restarting: retry
            await asyncio.sleep(0.2)
        raise AssertionError(f"status of {user_id} unavailable")

    async def settled(self, user: UserState) -> bool:
        """Consent applied every acknowledged event of the user, and every objection is purged."""
        doc = await self.status(user.user_id)
        history = {item["objection_id"]: item for item in doc["history"]}
        if set(user.events) - set(history):
            return False
        return all(item.get("purged_at") for item in history.values() if item["kind"] == "object")

    async def wait_settled(self, timeout: float = 180.0) -> None:
        pending = [u for u in self.users.values() if u.events]
        deadline = asyncio.get_running_loop().time() + timeout
        while pending:
            results = []
            for i in range(0, len(pending), 40):
                results += await asyncio.gather(*(self.settled(u) for u in pending[i : i + 40]))
            pending = [u for u, ok in zip(pending, results, strict=True) if not ok]
            if pending and asyncio.get_running_loop().time() > deadline:
                user = pending[0]
                doc = await self.status(user.user_id)
                missing = sorted(set(user.events) - {item["objection_id"] for item in doc["history"]})
                raise AssertionError(f"{len(pending)} users never settled, e.g. {user.user_id}: acknowledged but not applied: "
                                     f"{[(i, user.events[i]) for i in missing]}; consent holds {doc}")
            if pending:
                await asyncio.sleep(0.5)


def flush_pipeline(system: System, posts_partitions: int | None = None, timeout: float = 120.0) -> None:
    """Publish one post on every path (each `posts` partition to each home partition) and wait
    until all are stored: everything published before has then been decided and applied."""
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
            body = {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": "flush"}
            wanted[post_id] = (partition, user.encode(), orjson.dumps(body))
    for post_id, (partition, key, value) in wanted.items():
        system.publish([(key, value)], partition=partition)
    eventually(lambda: set(wanted) <= {r["post_id"] for r in system.training_rows()}, timeout=timeout, what="pipeline flushed")


def check_world(world: World, rows: list[dict[str, Any]], consent: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Compare the table and the consent state with the oracle; return the figures."""
    stored: dict[str, list[str]] = {}
    counted = Counter(r["post_id"] for r in rows)
    duplicates = sum(c - 1 for c in counted.values() if c > 1)
    for row in rows:
        stored.setdefault(row["user_id"], []).append(row["post_id"])
    leaks: list[str] = []
    lost: list[str] = []
    unapplied: list[str] = []
    for user in world.users.values():
        doc = consent.get(user.user_id)
        history = list(user.events.values())
        if doc is not None:
            applied = {item["objection_id"]: item for item in doc["history"]}
            missing = set(user.events) - set(applied)
            extra = set(applied) - set(user.events)
            unapplied += [f"{user.user_id}:{i}" for i in sorted(missing)]
            assert not extra, f"{user.user_id}: consent holds events nobody sent: {extra}"
            for objection_id, item in applied.items():
                assert parse_rfc3339(item["received_at"]) == user.events[objection_id].received_at_us, (user.user_id, item)
                if item["kind"] == "object" and not item.get("purged_at"):
                    unapplied.append(f"{user.user_id}:{objection_id} never purged")
            assert doc["objected"] == objecting_now(history), (user.user_id, doc)
        mine = set(stored.get(user.user_id, ()))
        allowed = {p for p, facts in user.posts.items() if eligible(facts, history)}
        leaks += [f"{user.user_id}/{p}" for p in sorted(mine - allowed)]
        must = allowed if not history else allowed & user.late
        lost += [f"{user.user_id}/{p}" for p in sorted(must - mine)]
    if leaks:
        first = world.users[leaks[0].split("/")[0]]
        detail = {"events": sorted(first.events.values(), key=lambda e: e.received_at_us), "posts": first.posts, "late": first.late, "consent": consent.get(first.user_id)}
        raise AssertionError(f"{len(leaks)} posts stored against the rule: {leaks[:10]}; first user: {detail}")
    assert not lost, f"{len(lost)} eligible posts missing: {lost[:10]}"
    assert not duplicates, f"{duplicates} duplicate post_ids in the table"
    assert not unapplied, f"{len(unapplied)} acknowledged objections not applied: {unapplied[:10]}"
    return {
        "cases": len(world.users),
        "posts": sum(len(u.posts) for u in world.users.values()),
        "objection events": sum(len(u.events) for u in world.users.values()),
        "stored": len(rows),
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
