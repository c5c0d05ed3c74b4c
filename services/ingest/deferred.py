"""Deferred posts: posts that fail only the notice rule wait here for their author's grace period.

Memory holds an index, never a post. The worker's hot loop hands each DEFERRED post to
`DeferredPosts.hold`, which appends the post's own bytes to `consentry.posts-deferred`
(partition = the user's home, key = the post_id, so the topic can be compacted) and indexes
it: its post_id, its author and, once the broker acknowledged the append, its offset. The
worker's offset commit comes after that acknowledgement, so a deferred post is never lost.

Release is driven by time, never by a scan of the topic: `DeferredIndex` keeps a min-heap of
(release time, partition, user), invalidated lazily when a user is rescheduled. About every
second `DeferredPosts.tick` pops the users whose grace period has ended, reads their posts
back from the topic by offset (sorted, in runs, in a background task: the worker's loop goes
on meanwhile) and then decides them again (`decide_release`) with the consent view as it is:

- accepted: forwarded to `training.posts` (same partition and encoding as any accepted post);
- the author objected since the post was written: dropped;
- still deferred (say the rule's settings changed): rescheduled.

Only once the forwards are acknowledged is a tombstone (post_id, null) written for each
decided post, so compaction forgets it; a crash in between makes the next owner decide it
again and forward it again, which the sink's post_id index absorbs. A consent change for
a user with deferred posts (a notice, an objection) has them decided at the next round.

On every assignment the index is rebuilt by reading each owned home partition of the topic
from the beginning to its high watermark (a tombstone removes the post, a later record of a
post_id replaces an earlier one), and the worker keeps the posts of its partitions held until
that is done. Each user is then scheduled from the current settings and consent state: at
once if one of their posts can be decided now, else when their grace period ends, or not at
all while they have no notice (a notice or an objection schedules them).

The bound: `CONSENTRY_DEFERRED_MAX_POSTS` index entries (about `ENTRY_BYTES` each). Users
never told cost an entry per post, no more: their posts are found in the index, without a
read of the topic, the moment a notice or an objection arrives for them. Posts deferred while
the index is full are still appended (durable) but not indexed: their partition is *spilled*
from the offset of the first of them, and `consentry_ingest_deferred_full` is 1. They wait
unindexed, so they are not released (fail closed: a post is used only once decided again),
until releases bring the index under 90 % of the bound: a catch-up pass then reads the
partition again from that offset and indexes what is missing (if the index fills again it
stops adding and remembers where). Reading posts never stops: everyone else's posts are
decided as usual. A post not found where the index said (which would be a bug) is handled the
same way: its partition is read again, from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from consentry.domain.eligibility import decide_release
from consentry.domain.model import Decision, Invalid, Post
from consentry.domain.notices import NoticePolicy, release_at_us
from consentry.kafka import BatchSender, client_options
from consentry.timeutil import now_us
from consentry.wire import encode_training_post, parse_post
from services.ingest import metrics
from services.ingest.consent_view import ConsentView
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

PENDING = -1  # appended, its offset not acknowledged yet
ENTRY_BYTES = 300  # one indexed post (post_id, author, offset, their dict slots), measured
RELEASE_EVERY_S = 1.0
MAX_USERS_PER_ROUND = 2_000
MAX_POSTS_PER_ROUND = 20_000  # read back and decided per round
RESUME_BELOW = 0.9  # of the bound: a catch-up pass starts under it
CHUNK_RECORDS = 2_000  # records of the topic applied per turn of the loop while loading or catching up
SEEK_GAP = 1_000  # reading back: a wanted offset further ahead than this is sought, not read through
MANY = 16  # a user's post_ids are kept in a list up to this many, then in a set

UserKey = tuple[int, str]  # (home partition, user_id)


def _rank(offset: int) -> float:
    """Which of two records of one post_id is later: one not yet acknowledged is the latest."""
    return float("inf") if offset == PENDING else offset


class DeferredIndex:
    """Where each deferred post of the owned home partitions is in the topic, and when each
    user is next due. Pure data structure: no I/O, no clock, no post bodies."""

    def __init__(self) -> None:
        self._posts: dict[int, dict[str, tuple[str, int]]] = {}  # partition -> post_id -> (user_id, offset)
        # partition -> user_id -> their post_id, or a list of them, or a set once many (cheap removal)
        self._users: dict[int, dict[str, str | list[str] | set[str]]] = {}
        self._due_at: dict[UserKey, int] = {}
        self._heap: list[tuple[int, int, str]] = []
        self.count = 0
        self.users = 0

    def clear(self) -> None:
        self._posts.clear()
        self._users.clear()
        self._due_at.clear()
        self._heap.clear()
        self.count = self.users = 0

    def __contains__(self, user: UserKey) -> bool:
        users = self._users.get(user[0])
        return users is not None and user[1] in users

    def offset_of(self, partition: int, post_id: str) -> int | None:
        """None: not indexed; PENDING: appended, not acknowledged yet."""
        entry = self._posts.get(partition, {}).get(post_id)
        return None if entry is None else entry[1]

    def put(self, partition: int, user_id: str, post_id: str, offset: int) -> None:
        """Index the post's record at `offset` (PENDING: being appended), unless a later
        record of the same post_id is indexed (a producer's retry, a record read again)."""
        posts = self._posts.setdefault(partition, {})
        entry = posts.get(post_id)
        if entry is not None:
            if _rank(entry[1]) >= _rank(offset) and not (offset == PENDING == entry[1]):
                return
            if entry[0] == user_id:
                posts[post_id] = (user_id, offset)
                return
            self.remove(partition, post_id)  # the same post_id for another author: the last record wins
        posts[post_id] = (user_id, offset)
        users = self._users.setdefault(partition, {})
        mine = users.get(user_id)
        if mine is None:
            users[user_id] = post_id
            self.users += 1
        elif type(mine) is str:
            users[user_id] = [mine, post_id]
        elif type(mine) is list:
            mine.append(post_id)
            if len(mine) > MANY:
                users[user_id] = set(mine)
        else:
            mine.add(post_id)  # type: ignore[union-attr]
        self.count += 1

    def acknowledged(self, partition: int, post_id: str, offset: int) -> None:
        """The append of a post indexed as PENDING landed at `offset`."""
        posts = self._posts.get(partition)
        entry = posts.get(post_id) if posts is not None else None
        if entry is not None and (entry[1] == PENDING or entry[1] < offset):
            posts[post_id] = (entry[0], offset)  # type: ignore[index]

    def remove(self, partition: int, post_id: str, before: int | None = None) -> UserKey | None:
        """Forget a post (only if its indexed record is older than `before`, a tombstone's
        offset); return its author."""
        posts = self._posts.get(partition)
        entry = posts.get(post_id) if posts is not None else None
        if entry is None or (before is not None and _rank(entry[1]) >= before):
            return None
        del posts[post_id]  # type: ignore[union-attr]
        user_id = entry[0]
        users = self._users[partition]
        mine = users[user_id]
        if type(mine) is str:
            del users[user_id]
            self.users -= 1
            self._due_at.pop((partition, user_id), None)
        elif type(mine) is list:
            mine.remove(post_id)
            if len(mine) == 1:
                users[user_id] = mine[0]
        else:
            mine.discard(post_id)  # type: ignore[union-attr]
        self.count -= 1
        return (partition, user_id)

    def posts_of(self, user: UserKey) -> list[tuple[str, int]]:
        """(post_id, offset) of the user's posts, in the order they were deferred."""
        partition, user_id = user
        mine = self._users.get(partition, {}).get(user_id)
        if mine is None:
            return []
        posts = self._posts[partition]
        ids = [mine] if type(mine) is str else mine
        return sorted(((p, posts[p][1]) for p in ids), key=lambda e: _rank(e[1]))

    def is_scheduled(self, user: UserKey) -> bool:
        return user in self._due_at

    def schedule(self, user: UserKey, at_us: int | None) -> None:
        """Decide `user`'s posts again at `at_us`; None: only when their consent state changes."""
        if user not in self:
            return
        if at_us is None:
            self._due_at.pop(user, None)
            return
        if self._due_at.get(user) == at_us:
            return
        self._due_at[user] = at_us
        heapq.heappush(self._heap, (at_us, user[0], user[1]))
        if len(self._heap) > 2 * len(self._due_at) + 1024:
            self._heap = [(at, p, u) for (p, u), at in self._due_at.items()]
            heapq.heapify(self._heap)

    def pop_due(self, now_us: int, limit: int) -> list[UserKey]:
        """Users due at `now_us` (at most `limit`), no longer scheduled: the caller reschedules."""
        due: list[UserKey] = []
        heap = self._heap
        while heap and heap[0][0] <= now_us and len(due) < limit:
            at, partition, user_id = heapq.heappop(heap)
            key = (partition, user_id)
            if self._due_at.get(key) == at:  # else a stale entry: the user was rescheduled
                del self._due_at[key]
                due.append(key)
        return due

    def next_due(self) -> int | None:
        heap = self._heap
        while heap and self._due_at.get((heap[0][1], heap[0][2])) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


def parse_deferred(value: bytes | None) -> Post | Invalid:
    """A record of the deferred topic: the post's original bytes (its key is the post_id)."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return Invalid("invalid_json", "deferred record is not JSON")
    user_id = obj.get("user_id") if type(obj) is dict else None
    return parse_post(value, user_id.encode() if type(user_id) is str else None)


@dataclass
class _Pass:
    """A read of home partitions of the topic into the index: the load after an assignment
    (from the beginning), or a catch-up of spilled partitions (from their first unindexed post)."""

    start: dict[int, int]  # partition -> the offset it reads from
    open: set[int]  # partitions not read to their end yet
    loading: bool  # the load after an assignment (else a catch-up)
    full_at: dict[int, int] = field(default_factory=dict)  # partition -> first post the index had no room for
    skipped: dict[int, int] = field(default_factory=dict)  # partition -> posts left unindexed


@dataclass
class _Round:
    """Due users' posts being read back: decided once `reading` is done."""

    entries: list[tuple[UserKey, list[tuple[str, int]]]]
    reading: asyncio.Task[dict[tuple[int, int], tuple[bytes | None, bytes | None]]]


class DeferredPosts:
    """The worker's deferred posts: the hooks it calls, the deferred topic's I/O, the metrics."""

    def __init__(self, settings: IngestSettings, view: ConsentView) -> None:
        self.settings = settings
        self.topic = settings.topics.posts_deferred
        self.training_topic = settings.topics.training_posts
        self.policy: NoticePolicy | None = settings.notice_policy
        self.max_posts = settings.deferred_max_posts
        self.view = view
        self.index = DeferredIndex()
        self._ready = False
        # Appends: (relative offset, post_id, user_id, indexed) per record of each batch.
        self._batches: dict[int, list[tuple[Any, list[tuple[int, str, str, bool]]]]] = {}
        self._sent: list[tuple[asyncio.Future[Any], int, list[tuple[int, str, str, bool]]]] = []
        self._max_acked: dict[int, int] = {}  # partition -> last offset an append landed at
        # Spilled partitions -> their first unindexed post (None: its append not acknowledged yet).
        self._spill: dict[int, int | None] = {}
        self._spilled_in_flight: dict[int, int] = {}
        self._unindexed: dict[int, int] = {}  # partition -> posts deferred but not indexed (the gauge)
        self._pass: _Pass | None = None
        self._round: _Round | None = None
        self._urgent = False
        self._next_tick = 0.0
        self._new = 0  # deferred since the last metrics update

    async def start(self, sender: BatchSender, producer: AIOKafkaProducer) -> None:
        self.sender = sender
        self.producer = producer
        options: dict[str, Any] = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": 4 << 20,
            "fetch_max_wait_ms": 50,
        }
        # Loads and catch-ups read sequentially; read-backs of due posts, by offset.
        self.reader = AIOKafkaConsumer(**client_options(self.settings), client_id="consentry-ingest-deferred", **options)
        self.fetcher = AIOKafkaConsumer(**client_options(self.settings), client_id="consentry-ingest-deferred-release", **options)
        await self.reader.start()
        await self.fetcher.start()

    async def stop(self) -> None:
        await self._cancel_round()
        await self.reader.stop()
        await self.fetcher.stop()

    # ------------------------------------------------------------------ ownership

    async def revoke(self) -> None:
        """The partitions are going: decide nothing more until the next assignment is loaded.
        (The worker flushed and settled every append before: none is in flight.)"""
        self._ready = False
        await self._cancel_round()
        if self._pass is not None:  # revoked while loading or catching up: stop reading
            self.reader.assign([])
            self._pass = None
        self._sent.clear()
        self._max_acked.clear()
        self._spill.clear()
        self._spilled_in_flight.clear()
        self._unindexed.clear()
        self.index.clear()
        self._update_gauges()

    async def assign(self, homes: set[int]) -> None:
        """Start rebuilding the index of these home partitions from the deferred topic."""
        await self.revoke()
        tps = [TopicPartition(self.topic, p) for p in sorted(homes)]
        self._pass = _Pass(start=dict.fromkeys(homes, 0), open=set(homes), loading=True)
        self.reader.assign(tps)
        if tps:
            await self.reader.seek_to_beginning(*tps)

    async def load(self) -> bool:
        """Read on towards the high watermarks; True once every owned partition is loaded."""
        if self._ready:
            return True
        if self._pass is None or not await self._read_pass(timeout_ms=50):
            return False
        self._ready = True
        self._urgent = True
        self._update_gauges()
        log.info(
            "deferred posts loaded: %d posts of %d users indexed, %d waiting unindexed (over CONSENTRY_DEFERRED_MAX_POSTS)",
            self.index.count, self.index.users, sum(self._unindexed.values()),
        )
        return True

    # ------------------------------------------------------------------ hooks

    def hold(self, partition: int, post: Post, raw: bytes) -> None:
        """A DEFERRED post from the hot loop: appended now (durable before the worker commits
        its offset), indexed now unless the index is full (then its partition spills)."""
        user_id, post_id = post.user_id, post.post_id
        spilled = partition in self._spill or (self.index.offset_of(partition, post_id) is None and self.index.count >= self.max_posts)
        self._append(partition, post_id, user_id, raw, indexed=not spilled)
        self._new += 1
        if spilled:
            if partition not in self._spill:
                self._spill[partition] = None
                log.warning(
                    "deferred posts fill CONSENTRY_DEFERRED_MAX_POSTS (%d): posts deferred in home partition %d wait unindexed "
                    "until releases free room; reading posts goes on",
                    self.max_posts, partition,
                )
            self._spilled_in_flight[partition] = self._spilled_in_flight.get(partition, 0) + 1
            self._unindexed[partition] = self._unindexed.get(partition, 0) + 1
            return
        self.index.put(partition, user_id, post_id, PENDING)
        user = (partition, user_id)
        if not self.index.is_scheduled(user) and self.policy is not None:
            self.index.schedule(user, release_at_us(self.view.notices(partition, user_id), self.policy))

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand the appends to the producer (the worker's flush): their futures, for the
        worker to wait for before committing the offsets of the posts deferred."""
        pending, self._batches = self._batches, {}
        futures = []
        for partition, batches in pending.items():
            for builder, records in batches:
                future = await self.producer.send_batch(builder, self.topic, partition=partition)
                self._sent.append((future, partition, records))
                futures.append(future)
        return futures

    def on_consent_changed(self, touched: Iterable[tuple[int, str]]) -> None:
        """A new notice, an objection...: decide the user's deferred posts at the next round."""
        now = now_us()
        for user in touched:
            if user in self.index:
                self.index.schedule(user, now)
                self._urgent = True

    async def tick(self, ready: bool) -> bool:
        """Called by the worker's loop, under its lock (`ready`: no partition held): index the
        acknowledged appends, catch up spilled partitions, and, about every second (at once
        after a consent change), read back and decide what is due. Never stops the worker's
        reading (False): a full index spills instead."""
        self._take_acks()
        if self._new:
            metrics.DEFERRED.inc(self._new)
            self._new = 0
        if ready and self._ready:
            await self._catch_up()
            await self._release()
        self._update_gauges()
        return False

    # ------------------------------------------------------------------ appending

    def _append(self, partition: int, post_id: str, user_id: str, raw: bytes, indexed: bool) -> None:
        batches = self._batches.get(partition)
        if batches is None:
            batches = self._batches[partition] = [(self.producer.create_batch(), [])]
        builder, records = batches[-1]
        appended = builder.append(key=post_id.encode(), value=raw, timestamp=None)
        if appended is None:  # full: a new batch (an empty batch always takes one record)
            builder, records = self.producer.create_batch(), []
            batches.append((builder, records))
            appended = builder.append(key=post_id.encode(), value=raw, timestamp=None)
        records.append((appended.offset, post_id, user_id, indexed))

    def _take_acks(self) -> None:
        """The offsets of the appends acknowledged since the last turn."""
        waiting = []
        for future, partition, records in self._sent:
            if not future.done():
                waiting.append((future, partition, records))
                continue
            if future.cancelled() or future.exception() is not None:
                continue  # the worker's settle raises it: the process stops
            base = future.result().offset
            self._max_acked[partition] = max(self._max_acked.get(partition, -1), base + records[-1][0])
            for relative, post_id, _user_id, indexed in records:
                offset = base + relative
                if indexed:
                    self.index.acknowledged(partition, post_id, offset)
                    continue
                self._spilled_in_flight[partition] -= 1
                if partition in self._spill:
                    first = self._spill[partition]
                    self._spill[partition] = offset if first is None else min(first, offset)
        self._sent = waiting

    # ------------------------------------------------------------------ reading the topic into the index

    async def _catch_up(self) -> None:
        if self._pass is None:
            if self.index.count >= self.max_posts * RESUME_BELOW:
                return
            start = {p: first for p, first in self._spill.items() if first is not None}
            if not start:
                return
            log.info("deferred posts: room in the index again; reading home partitions %s from %s", sorted(start), start)
            self._pass = _Pass(start=start, open=set(start), loading=False)
            self.reader.assign([TopicPartition(self.topic, p) for p in start])
            for p, offset in start.items():
                self.reader.seek(TopicPartition(self.topic, p), offset)
        await self._read_pass(timeout_ms=0)

    async def _read_pass(self, timeout_ms: int) -> bool:
        """One chunk of the pass; True once it has read every partition to its end."""
        reading = self._pass
        assert reading is not None
        if reading.open:
            batch = await self.reader.getmany(timeout_ms=timeout_ms, max_records=CHUNK_RECORDS)
            now = now_us()
            for tp, records in batch.items():
                if tp.partition in reading.open:
                    for record in records:
                        self._apply(reading, tp.partition, record, now)
            for p in sorted(reading.open):
                tp = TopicPartition(self.topic, p)
                highwater = self.reader.highwater(tp)
                if highwater is None:
                    continue
                position = await self.reader.position(tp)
                # To its end, and past every append acknowledged meanwhile (a catch-up runs while posts are deferred).
                if position >= highwater and position > self._max_acked.get(p, -1) and not self._spilled_in_flight.get(p):
                    self._end_partition(reading, p)
            if reading.open:
                return False
        self._finish_pass(reading)
        return True

    def _apply(self, reading: _Pass, partition: int, record: ConsumerRecord, now: int) -> None:
        if record.key is None:
            return
        post_id = record.key.decode("utf-8", errors="replace")
        if record.value is None:  # released or dropped
            self.index.remove(partition, post_id, before=record.offset)
            return
        indexed_at = self.index.offset_of(partition, post_id)
        if indexed_at is not None and _rank(indexed_at) >= record.offset:
            return  # a later record of it is indexed already
        post = parse_deferred(record.value)
        if type(post) is Invalid:
            metrics.ERRORS.labels("deferred_load").inc()
            log.error("unreadable deferred record at %s[%d]@%d (%s); skipped", self.topic, partition, record.offset, post.reason)
            return
        if indexed_at is None and (partition in reading.full_at or self.index.count >= self.max_posts):
            reading.full_at.setdefault(partition, record.offset)
            reading.skipped[partition] = reading.skipped.get(partition, 0) + 1
            return
        self.index.put(partition, post.user_id, post_id, record.offset)
        user = (partition, post.user_id)
        # Due at once if the settings or the consent state let it be decided now (released or
        # dropped); else when the user's grace period ends, or when a notice arrives.
        intervals, notices = self.view.intervals(partition, post.user_id), self.view.notices(partition, post.user_id)
        if decide_release(post, intervals, now, notices, self.policy) is not Decision.DEFERRED:
            self.index.schedule(user, now)
        elif not self.index.is_scheduled(user):
            self.index.schedule(user, self._due_again(user))

    def _end_partition(self, reading: _Pass, partition: int) -> None:
        reading.open.discard(partition)
        self.reader.pause(TopicPartition(self.topic, partition))
        # Unindexed from here on: where this pass found no room, or where a post was not found
        # meanwhile (before where this pass started).
        froms = [reading.full_at[partition]] if partition in reading.full_at else []
        first = self._spill.get(partition)
        if first is not None and first < reading.start[partition]:
            froms.append(first)
        if froms:
            self._spill[partition] = min(froms)
            self._unindexed[partition] = reading.skipped.get(partition, 0)
        else:
            self._spill.pop(partition, None)
            self._unindexed.pop(partition, None)

    def _finish_pass(self, reading: _Pass) -> None:
        self.reader.assign([])
        self._pass = None
        self._urgent = True
        if not reading.loading:
            log.info("deferred posts: catch-up done, %d indexed, %d still waiting unindexed", self.index.count, sum(self._unindexed.values()))

    def _due_again(self, user: UserKey) -> int | None:
        if self.policy is None:
            return now_us()
        return release_at_us(self.view.notices(*user), self.policy)

    # ------------------------------------------------------------------ release

    async def _release(self) -> None:
        if self._round is not None:
            if not self._round.reading.done():
                return
            round_, self._round = self._round, None
            await self._decide(round_.entries, round_.reading.result())
        clock = time.monotonic()
        if not self._urgent and clock < self._next_tick:
            return
        self._next_tick = clock + RELEASE_EVERY_S
        self._urgent = False
        self._start_round(now_us())

    def _start_round(self, now: int) -> None:
        due = self.index.pop_due(now, MAX_USERS_PER_ROUND)
        if not due:
            return
        if len(due) == MAX_USERS_PER_ROUND:
            self._urgent = True  # more are due: carry on at the next turn of the loop
        entries: list[tuple[UserKey, list[tuple[str, int]]]] = []
        wanted: dict[int, list[int]] = {}
        room = MAX_POSTS_PER_ROUND
        for n, user in enumerate(due):
            if room <= 0:  # the rest at the next round
                for later in due[n:]:
                    self.index.schedule(later, now)
                self._urgent = True
                break
            # Posts still being appended wait for the next round (the user is due again at once).
            mine = [(post_id, offset) for post_id, offset in self.index.posts_of(user) if offset != PENDING][:room]
            room -= len(mine)
            entries.append((user, mine))
            wanted.setdefault(user[0], []).extend(offset for _, offset in mine)
        for offsets in wanted.values():
            offsets.sort()
        self._round = _Round(entries, asyncio.create_task(self._read_back(wanted)))

    async def _read_back(self, wanted: dict[int, list[int]]) -> dict[tuple[int, int], tuple[bytes | None, bytes | None]]:
        """The records at these offsets (key, value), read in runs: seek to the first wanted
        offset, read on while the next is near, seek again when it is far."""
        found: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
        fetcher = self.fetcher
        try:
            for partition, offsets in sorted(wanted.items()):
                tp = TopicPartition(self.topic, partition)
                fetcher.assign([tp])
                want = set(offsets)
                i = 0
                while i < len(offsets):
                    fetcher.seek(tp, offsets[i])
                    while i < len(offsets):
                        records = (await fetcher.getmany(tp, timeout_ms=500, max_records=CHUNK_RECORDS)).get(tp)
                        if not records:
                            highwater = fetcher.highwater(tp)
                            if highwater is not None and await fetcher.position(tp) >= highwater:
                                i = len(offsets)  # the rest is not there: missing
                            continue
                        for record in records:
                            if record.offset in want:
                                found[(partition, record.offset)] = (record.key, record.value)
                        last = records[-1].offset
                        while i < len(offsets) and offsets[i] <= last:
                            i += 1
                        if i < len(offsets) and offsets[i] > last + SEEK_GAP:
                            break
        finally:
            fetcher.assign([])
        return found

    async def _decide(self, entries: list[tuple[UserKey, list[tuple[str, int]]]], found: dict[tuple[int, int], tuple[bytes | None, bytes | None]]) -> None:
        now = now_us()
        decided: list[tuple[int, str]] = []
        released = dropped = 0
        for user, mine in entries:
            partition, user_id = user
            posts: list[Post] = []
            for post_id, offset in mine:
                if self.index.offset_of(partition, post_id) != offset:
                    continue  # decided, or deferred again, meanwhile
                record = found.get((partition, offset))
                if record is None or record[1] is None or record[0] != post_id.encode():
                    self._not_found(partition, post_id, offset)
                    continue
                post = parse_deferred(record[1])
                if type(post) is Invalid:
                    metrics.ERRORS.labels("deferred_read").inc()
                    log.error("unreadable deferred record at %s[%d]@%d (%s); left out", self.topic, partition, offset, post.reason)
                    self.index.remove(partition, post_id)
                    continue
                posts.append(post)
            intervals = self.view.intervals(partition, user_id)
            notices = self.view.notices(partition, user_id)
            for post in sorted(posts, key=lambda p: (p.created_at_us, p.post_id)):  # oldest first
                decision = decide_release(post, intervals, now, notices, self.policy)
                if decision is Decision.DEFERRED:
                    continue
                if decision is Decision.ACCEPT:
                    self.sender.append(self.training_topic, partition, user_id.encode(), encode_training_post(post, now))
                    released += 1
                else:
                    dropped += 1
                decided.append((partition, post.post_id))
                self.index.remove(partition, post.post_id)
            if user in self.index:
                self.index.schedule(user, self._due_again(user))
        if not decided:
            return
        # The forwards first: a tombstone must never precede its post's acknowledged forward.
        await self.sender.flush()
        for partition, post_id in decided:
            self.sender.append(self.topic, partition, post_id.encode(), None)  # type: ignore[arg-type]
        await self.sender.flush()
        metrics.DEFERRED_RELEASED.inc(released)
        metrics.DEFERRED_DROPPED.inc(dropped)
        log.info("deferred posts: %d released, %d dropped (their authors objected meanwhile)", released, dropped)

    def _not_found(self, partition: int, post_id: str, offset: int) -> None:
        """Not at the offset indexed (a bug): never released from there; the partition is read
        again from its start (a catch-up pass) to find it where it is, if it still is."""
        metrics.ERRORS.labels("deferred_read").inc()
        log.error("deferred post not found at %s[%d]@%d where indexed; that partition is read again", self.topic, partition, offset)
        self.index.remove(partition, post_id)
        self._spill[partition] = 0
        self._unindexed[partition] = self._unindexed.get(partition, 0) + 1

    async def _cancel_round(self) -> None:
        round_, self._round = self._round, None
        if round_ is not None:
            round_.reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await round_.reading

    def _update_gauges(self) -> None:
        metrics.DEFERRED_POSTS.set(self.index.count)
        metrics.DEFERRED_BYTES.set(self.index.count * ENTRY_BYTES)
        metrics.USERS_WAITING.set(self.index.users)
        metrics.DEFERRED_UNINDEXED.set(sum(self._unindexed.values()))
        metrics.DEFERRED_FULL.set(1 if self._spill or self.index.count >= self.max_posts else 0)
