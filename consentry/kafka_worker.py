"""The Kafka worker skeleton that the batch services (ingest, sink) stand on.

One consumer in a group, and the loop around a service's own decisions. The skeleton owns
the consumer, its rebalance listener, the offset commits and every pause and resume; a
service subclasses `KafkaWorker` and fills in the hooks, each called under the worker's
lock (never two at a time, never during a rebalance):

- **Assignment: load, then decide.** New partitions are held (paused, and nothing of theirs
  handed over) before anything awaits. `on_assigned` loads their state, or starts to and
  `load` reads on at each turn of the loop (a bounded chunk each); only once it is loaded are
  they released. The loop keeps polling meanwhile, so a load may outlast
  `max.poll.interval.ms`; a revocation stops it (`load` is not called again until the next
  assignment).
- **Revocation.** What is pending is flushed and committed, then `on_revoked` drops the
  partitions' state.
- **The loop.** `getmany` within bounds; the records of partitions still assigned and not
  held go to `handle`; a `flush` once `flush_records` wait or `flush_seconds` after the
  first; the positions a flush made durable committed once its acks are in (a service may
  leave `in_flight` flushes unacknowledged while it reads on: ingest's pipelining); lag.
- **Back-pressure.** `tick` (the service's background work, each turn before reading) says
  whether the service is over its memory bound; while it is, every partition is paused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from consentry import failpoints
from consentry.lag import LagGauge, lag_of

log = logging.getLogger(__name__)

Batch = Mapping[TopicPartition, list[ConsumerRecord]]
Positions = dict[TopicPartition, int]  # partition -> next offset to read: what a commit records


@dataclass(frozen=True)
class Bounds:
    """How a worker reads, flushes and commits."""

    max_records: int  # most records per getmany
    poll_ms: int  # longest wait for records while nothing waits for a flush
    flush_records: int  # flush once the service holds this many records...
    flush_seconds: float  # ...or this long after it was handed the first (0: after every batch)
    in_flight: int = 0  # flushes left unacknowledged while the next batch is read and decided
    commit_every_seconds: float = 0.0  # while busy, commit at most this often (a commit is a round trip)
    stats_seconds: float = 5.0  # lag and the service's slow gauges at most this often


@dataclass(frozen=True)
class Flushed:
    """What one flush made durable: its positions may be committed once every ack is in."""

    positions: Positions
    acks: Sequence[asyncio.Future[Any]] = ()


def group_consumer(connection: Mapping[str, Any], group_id: str, client_id: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer in `group_id` whose offsets only `KafkaWorker` commits, after its flushes;
    `connection` is `consentry.kafka.client_options(settings)` (servers and security)."""
    return AIOKafkaConsumer(
        **connection,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: KafkaWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker._revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker._assign(set(assigned))


class KafkaWorker(ABC):
    """The consume / flush / commit / rebalance loop; subclasses decide (see the module)."""

    def __init__(self, name: str, bounds: Bounds, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name  # the lag gauge's service label, and the `NAME.before_commit` failpoint
        self.bounds = bounds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._assigned: set[TopicPartition] = set()
        self._held: set[TopicPartition] = set()  # assigned, paused until their state is loaded
        self._full = False  # the service is over its memory bound: every partition paused
        self._pending = 0  # records handled since the last flush that count towards its size bound
        self._first_at: float | None = None  # when the first of them was handled
        # Flushes whose acks are not all in, oldest first: their positions wait for them.
        self._inflight: deque[Flushed] = deque()
        self._durable: Positions = {}  # acknowledged, commit pending
        self._committed_at = float("-inf")
        self._consumed: Positions = {}  # next offset to read, for the lag gauge
        self._stats_at = float("-inf")
        self._lag = LagGauge(name)

    # ------------------------------------------------------------------ the service's hooks

    async def on_assigned(self, partitions: set[TopicPartition]) -> bool:
        """Load the new partitions' state, or start to. True: loaded, read them at once;
        False: they stay held until `load` returns True."""
        return True

    async def load(self) -> bool:
        """Called at each turn of the loop while partitions are held: read on; True once loaded."""
        return True

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """The partitions are going; what was pending is flushed and committed: drop their state."""

    async def tick(self, ready: bool) -> bool:
        """Background work at each turn, before reading (`ready`: no partition is held).
        Return True while over the service's memory bound: no partition is read until False."""
        return False

    @abstractmethod
    async def handle(self, batch: Batch) -> int:
        """Decide these records (of assigned partitions, none held). Return how many of them
        now wait for the next flush (they count towards `flush_records`)."""

    @abstractmethod
    async def flush(self) -> Flushed:
        """Make what was handled durable, or send it on its way: its acks are waited for
        before its positions are committed."""

    async def refresh_gauges(self) -> None:
        """The service's own slow gauges, at most every `stats_seconds`."""

    # ------------------------------------------------------------------ for the service

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._assigned)

    @property
    def held(self) -> frozenset[TopicPartition]:
        return frozenset(self._held)

    async def start_consumer(self, consumer: AIOKafkaConsumer, topics: Sequence[str]) -> None:
        """Start the group's consumer and subscribe it, with the skeleton's rebalance listener."""
        self.consumer = consumer
        await consumer.start()
        consumer.subscribe(list(topics), listener=_Listener(self))

    async def stop_consuming(self) -> None:
        """End the loop, then flush and commit what is pending (the consumer is left to the
        service to stop, with its other clients)."""
        self._stopping.set()
        async with self._lock:
            try:
                await self._flush_and_commit()
            except Exception:
                log.exception("final flush or commit failed; the next owner re-reads from the last commit")

    async def settle(self) -> None:
        """Wait for the acks of every flush so far and commit their positions. From a hook
        only (under the lock): say, before writing what must come after everything flushed."""
        await self._settle(keep=0)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.step()

    async def step(self) -> None:
        """One turn of the loop."""
        async with self._lock:
            # Between a revocation and the next assignment nothing is loaded: no partition is ours.
            if self._held and self._assigned and await self.load():
                self._release()
            self._backpressure(await self.tick(ready=not self._held))
            held = bool(self._held)
        if held:
            # Buffered records come back without suspending: let /readyz and /metrics answer.
            await asyncio.sleep(0)
        # Outside the lock: before the first assignment getmany waits for one, and the
        # rebalance listener that brings it needs the lock. While partitions are held (their
        # state loading, a chunk per turn) the loop still polls, without waiting: the group
        # drops a consumer that does not poll within max.poll.interval.ms, however long a
        # load takes. Held partitions are paused, so nothing of theirs comes back.
        timeout_ms = 0 if held else self._poll_ms()
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.bounds.max_records)
        async with self._lock:
            ours = self._still_ours(batch)
            if ours:
                for tp, records in ours.items():
                    self._consumed[tp] = records[-1].offset + 1
                self._pending += await self.handle(ours)
                if self._first_at is None:
                    self._first_at = self._clock()
            if self._flush_due():
                await self._flush()
            # Pipelined: the newest flushes travel to the broker while the next batch is read
            # and decided; older ones must be acknowledged before their offsets are committed.
            await self._settle(keep=self.bounds.in_flight if batch else 0)
            if self._clock() - self._stats_at >= self.bounds.stats_seconds:
                await self._refresh_stats()

    def _poll_ms(self) -> int:
        if self._first_at is None:
            return self.bounds.poll_ms
        left = max(0.0, self._first_at + self.bounds.flush_seconds - self._clock())
        return min(self.bounds.poll_ms, int(left * 1000))

    def _still_ours(self, batch: Batch) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Drop records fetched before a rebalance took or held their partition."""
        ours = {}
        for tp, records in batch.items():
            if tp not in self._assigned:
                continue
            if tp in self._held:
                self.consumer.seek(tp, records[0].offset)  # read again once its state is loaded
                continue
            ours[tp] = records
        return ours

    def _flush_due(self) -> bool:
        if self._first_at is None:
            return False
        return self._pending >= self.bounds.flush_records or self._clock() - self._first_at >= self.bounds.flush_seconds

    async def _flush(self) -> None:
        self._pending, self._first_at = 0, None
        flushed = await self.flush()
        if flushed.acks or flushed.positions:
            self._inflight.append(flushed)

    async def _settle(self, keep: int) -> None:
        """Wait for the acks of all but the newest `keep` flushes, then commit their positions
        (while busy, at most every `commit_every_seconds`: a replay after a crash is harmless).
        A failed send raises here: nothing read after it is committed, so it is read again."""
        while len(self._inflight) > keep:
            flushed = self._inflight[0]
            if flushed.acks:
                await asyncio.gather(*flushed.acks)
            self._inflight.popleft()
            self._durable.update(flushed.positions)
        now = self._clock()
        if self._durable and (keep == 0 or now - self._committed_at >= self.bounds.commit_every_seconds):
            failpoints.hit(f"{self.name}.before_commit")
            positions, self._durable = self._durable, {}
            await self.consumer.commit(positions)
            self._committed_at = now

    async def _flush_and_commit(self) -> None:
        if self._first_at is not None:
            await self._flush()
        await self._settle(keep=0)

    async def _refresh_stats(self) -> None:
        self._stats_at = self._clock()
        consumer = self.consumer
        self._lag.update({(tp.topic, tp.partition): lag_of(consumer.highwater(tp), self._consumed.get(tp)) for tp in self._assigned})
        await self.refresh_gauges()

    # ------------------------------------------------------------------ pause and resume

    def _release(self) -> None:
        if not self._full:
            self.consumer.resume(*self._held)
        self._held = set()

    def _backpressure(self, full: bool) -> None:
        if full and not self._full:
            self.consumer.pause(*self.consumer.assignment())
        elif self._full and not full:
            self.consumer.resume(*(set(self.consumer.assignment()) - self._held))
        self._full = full

    # ------------------------------------------------------------------ rebalance

    async def _assign(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            # Held before anything awaits: nothing of theirs is decided before their state is loaded.
            self._held = set(partitions)
            self.consumer.pause(*partitions)
            self._full = False  # a new assignment's partitions start unpaused (and held)
            self._assigned = set(partitions)
            self._consumed = {}
            if await self.on_assigned(set(partitions)):
                self._release()

    async def _revoke(self, partitions: set[TopicPartition]) -> None:
        # Partitions still held stay so until the next assignment replaces them: nothing of
        # theirs is read meanwhile.
        async with self._lock:
            await self._flush_and_commit()
            await self.on_revoked(partitions)
            self._assigned = set()
