"""Deferred posts: posts that fail only the notice rule wait here for their author's grace period.

The worker's hot loop hands each DEFERRED post to `DeferredPosts.hold`, which appends the
post's own bytes to `consentry.posts-deferred` (partition = the user's home, key = the
post_id, so the topic can be compacted) and indexes it in memory. The worker's offset
commit comes after that append is acknowledged, so a deferred post is never lost.

Release is driven by time, never by a scan of the topic: `DeferredIndex` keeps a min-heap of
(release time, partition, user), invalidated lazily when a user is rescheduled. About every
second `DeferredPosts.tick` pops the users whose grace period has ended and decides their
posts again (`decide_release`) with the current consent view:

- accepted: forwarded to `training.posts` (same partition and encoding as any accepted post);
- the author objected since the post was written: dropped;
- still deferred (say the rule's settings changed): rescheduled.

Only once the forwards are acknowledged is a tombstone (post_id, null) written for each
decided post, so compaction forgets it; a crash in between makes the next owner decide it
again and forward it again, which the sink's post_id index absorbs. A consent change for
a user with deferred posts (a notice, an objection) has them decided at the next tick.

On every assignment the worker calls `assign`: the index is rebuilt by reading each owned
home partition of the topic from the beginning to its high watermark (tombstones remove
entries), and the worker keeps the posts of its partitions held until that is done
(`load` returns True). Everything is then decided once more at the first tick.

Memory: the posts wait in memory. Beyond `CONSENTRY_DEFERRED_MAX_BYTES` (estimated from the
posts' sizes) `tick` says the deferred posts are full and the worker stops reading posts
(it alone pauses its consumer) until releases bring them under 90 % of that bound; nothing
is ever dropped for lack of room.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from consentry.domain.eligibility import decide_release
from consentry.domain.model import Decision
from consentry.domain.notices import NoticePolicy, release_at_us
from consentry.domain.model import Invalid, Post
from consentry.wire import encode_training_post, parse_post
from consentry.kafka import BatchSender, client_options
from consentry.timeutil import now_us
from services.ingest import metrics
from services.ingest.consent_view import ConsentView
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

POST_OVERHEAD_BYTES = 400  # a Post object, its strings and the index entries, roughly
RELEASE_EVERY_S = 1.0
MAX_USERS_PER_TICK = 2_000
RESUME_BELOW = 0.9  # of the memory bound

UserKey = tuple[int, str]  # (home partition, user_id)


class DeferredIndex:
    """The deferred posts of the owned home partitions, and when each user is next due. Pure
    data structure: no I/O, no clock."""

    def __init__(self) -> None:
        self._posts: dict[UserKey, dict[str, tuple[Post, int]]] = {}
        self._due_at: dict[UserKey, int] = {}
        self._heap: list[tuple[int, int, str]] = []
        self.count = 0
        self.bytes = 0

    def clear(self) -> None:
        self._posts.clear()
        self._due_at.clear()
        self._heap.clear()
        self.count = self.bytes = 0

    def __contains__(self, user: UserKey) -> bool:
        return user in self._posts

    @property
    def users(self) -> int:
        return len(self._posts)

    def add(self, partition: int, post: Post, size: int) -> None:
        posts = self._posts.setdefault((partition, post.user_id), {})
        previous = posts.get(post.post_id)
        if previous is not None:  # the same post again (a producer's retry): keep one
            self.bytes -= previous[1]
            self.count -= 1
        posts[post.post_id] = (post, size)
        self.count += 1
        self.bytes += size

    def remove(self, user: UserKey, post_id: str) -> None:
        posts = self._posts.get(user)
        entry = posts.pop(post_id, None) if posts is not None else None
        if entry is None:
            return
        self.count -= 1
        self.bytes -= entry[1]
        if not posts:
            del self._posts[user]
            self._due_at.pop(user, None)

    def posts_of(self, user: UserKey) -> list[Post]:
        """Oldest first."""
        return sorted((p for p, _size in self._posts.get(user, {}).values()), key=lambda p: (p.created_at_us, p.post_id))

    def all_users(self) -> Iterable[UserKey]:
        return list(self._posts)

    def is_scheduled(self, user: UserKey) -> bool:
        return user in self._due_at

    def schedule(self, user: UserKey, at_us: int | None) -> None:
        """Decide `user`'s posts again at `at_us`; None: only when their consent state changes."""
        if user not in self._posts:
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


class DeferredPosts:
    """The worker's deferred posts: the hooks it calls, the deferred topic's I/O, the metrics."""

    def __init__(self, settings: IngestSettings, view: ConsentView) -> None:
        self.settings = settings
        self.topic = settings.topics.posts_deferred
        self.training_topic = settings.topics.training_posts
        self.policy: NoticePolicy | None = settings.notice_policy
        self.max_bytes = settings.deferred_max_bytes
        self.view = view
        self.index = DeferredIndex()
        self._loading: dict[TopicPartition, dict[str, tuple[Post, int]]] | None = None
        self._ready = False
        self._full = False  # over the memory bound (until under RESUME_BELOW of it)
        self._urgent = False
        self._next_tick = 0.0
        self._new = 0  # deferred since the last metrics update

    async def start(self, sender: BatchSender) -> None:
        self.sender = sender
        self.reader = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            fetch_max_wait_ms=50,
            client_id="consentry-ingest-deferred",
        )
        await self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()

    # ------------------------------------------------------------------ ownership

    def revoke(self) -> None:
        """The partitions are going: decide nothing more until the next assignment is loaded."""
        self._ready = False
        if self._loading is not None:  # revoked while loading: stop fetching
            self.reader.assign([])
        self._loading = None
        self.index.clear()
        self._update_gauges()

    async def assign(self, homes: set[int]) -> None:
        """Start rebuilding the index of these home partitions from the deferred topic."""
        self.revoke()
        self._full = False  # revoke emptied the index
        tps = [TopicPartition(self.topic, p) for p in sorted(homes)]
        self._loading = {tp: {} for tp in tps}
        self.reader.assign(tps)
        if tps:
            await self.reader.seek_to_beginning(*tps)

    async def load(self) -> bool:
        """Read on towards the high watermarks; True once every owned partition is loaded."""
        if self._ready:
            return True
        loading = self._loading
        if loading is None:
            return False
        if loading:
            batch = await self.reader.getmany(timeout_ms=50, max_records=10_000)
            for tp, records in batch.items():
                posts = loading.get(tp)
                if posts is None:
                    continue
                for record in records:
                    self._apply_record(tp, posts, record.key, record.value)
            for tp in loading:
                highwater = self.reader.highwater(tp)
                if highwater is None or await self.reader.position(tp) < highwater:
                    return False
        now = now_us()
        for tp, posts in loading.items():
            for post, size in posts.values():
                self.index.add(tp.partition, post, size)
        for user in self.index.all_users():  # decided again at once: the settings may have changed
            self.index.schedule(user, now)
        self.reader.assign([])
        self._loading = None
        self._ready = True
        self._urgent = True
        self._update_gauges()
        log.info("deferred posts loaded: %d posts of %d users in home partitions %s", self.index.count, self.index.users, sorted(tp.partition for tp in loading))
        return True

    def _apply_record(self, tp: TopicPartition, posts: dict[str, tuple[Post, int]], key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        post_id = key.decode("utf-8", errors="replace")
        if value is None:  # released or dropped
            posts.pop(post_id, None)
            return
        post = parse_deferred(value)
        if type(post) is Invalid:
            metrics.ERRORS.labels("deferred_load").inc()
            log.error("unreadable deferred record in %s[%d] (%s); skipped", tp.topic, tp.partition, post.reason)
            return
        posts[post_id] = (post, len(value) + POST_OVERHEAD_BYTES)

    # ------------------------------------------------------------------ hooks

    def hold(self, partition: int, post: Post, raw: bytes) -> None:
        """A DEFERRED post from the hot loop: durable with the worker's next flush (before its
        offset commit), indexed now."""
        self.sender.append(self.topic, partition, post.post_id.encode(), raw)
        user = (partition, post.user_id)
        self.index.add(partition, post, len(raw) + POST_OVERHEAD_BYTES)
        if not self.index.is_scheduled(user) and self.policy is not None:
            self.index.schedule(user, release_at_us(self.view.notices(partition, post.user_id), self.policy))
        self._new += 1

    def on_consent_changed(self, touched: Iterable[tuple[int, str]]) -> None:
        """A new notice, an objection...: decide the user's deferred posts at the next tick."""
        now = now_us()
        for user in touched:
            if user in self.index:
                self.index.schedule(user, now)
                self._urgent = True

    async def tick(self, ready: bool) -> bool:
        """Called by the worker's loop, under its lock (`ready`: no partition held): the memory
        bound, then, about every second (at once after a consent change), release or drop
        what is due. True while the posts fill their memory bound: the worker reads no posts."""
        if self._new:
            metrics.DEFERRED.inc(self._new)
            self._new = 0
        if not ready or not self._ready:
            self._update_gauges()
            return self._full
        self._check_memory()
        clock = time.monotonic()
        if not self._urgent and clock < self._next_tick:
            self._update_gauges()
            return self._full
        self._next_tick = clock + RELEASE_EVERY_S
        self._urgent = False
        await self._release_due(now_us())
        self._check_memory()
        self._update_gauges()
        return self._full

    # ------------------------------------------------------------------ release

    async def _release_due(self, now: int) -> None:
        due = self.index.pop_due(now, MAX_USERS_PER_TICK)
        if not due:
            return
        if len(due) == MAX_USERS_PER_TICK:
            self._urgent = True  # more are due: carry on at the next turn of the loop
        decided: list[tuple[int, str]] = []
        released = dropped = 0
        for user in due:
            partition, user_id = user
            intervals = self.view.intervals(partition, user_id)
            notices = self.view.notices(partition, user_id)
            for post in self.index.posts_of(user):
                decision = decide_release(post, intervals, now, notices, self.policy)
                if decision is Decision.DEFERRED:
                    continue
                if decision is Decision.ACCEPT:
                    self.sender.append(self.training_topic, partition, user_id.encode(), encode_training_post(post, now))
                    released += 1
                else:
                    dropped += 1
                decided.append((partition, post.post_id))
                self.index.remove(user, post.post_id)
            if user in self.index and self.policy is not None:
                self.index.schedule(user, release_at_us(notices, self.policy))
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

    def _check_memory(self) -> None:
        if not self._full and self.index.bytes > self.max_bytes:
            self._full = True
            log.warning(
                "deferred posts fill CONSENTRY_DEFERRED_MAX_BYTES (%d bytes, %d posts): reading posts stops until releases free room",
                self.index.bytes, self.index.count,
            )
        elif self._full and self.index.bytes <= self.max_bytes * RESUME_BELOW:
            self._full = False
            log.info("deferred posts under their memory bound again: reading posts resumes")

    def _update_gauges(self) -> None:
        metrics.DEFERRED_POSTS.set(self.index.count)
        metrics.DEFERRED_BYTES.set(self.index.bytes)
        metrics.USERS_WAITING.set(self.index.users)
        metrics.DEFERRED_FULL.set(1 if self._full else 0)
