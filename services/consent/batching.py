"""How the consent agent groups events into batches, and what a batch keeps per user.

The agent takes events from faust one by one (`stream.events()`, with faust's acks off) and
holds them while more are already waiting in the stream's queue, up to BATCH_EVENTS; then it
applies them together and acknowledges them. Nothing is held waiting for events that have not
arrived: a quiet stream gives batches of one, at the old latency.

One hazard of holding events: a rebalance or a stop clears the stream's queue and waits for
every event taken to be acknowledged (faust's `Consumer.wait_empty`, no time limit), while the
agent waits for the next event, which will not come. A watchdog applies and acknowledges what
is held once no event has arrived for IDLE_FLUSH_SECONDS, so that wait ends as it did when
every event was acknowledged on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services.consent import metrics

BATCH_EVENTS = 1000
IDLE_FLUSH_SECONDS = 0.05


class Row:
    """One user's row (in one partition) while a batch is applied: as last written (or read),
    as the batch's events left it so far, and the last event that touched it (whose partition
    the table writes to)."""

    __slots__ = ("key", "event", "written", "state", "dirty")

    def __init__(self, key: bytes, event: Any, state: Any) -> None:
        self.key = key
        self.event = event
        self.written = state
        self.state = state
        self.dirty = False


class Tally:
    """A batch's metric increments and its one log line for imports, published once."""

    __slots__ = ("counts", "duplicates", "notice_duplicates", "imported")

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, tuple[str, ...]], int] = {}
        self.duplicates = 0
        self.notice_duplicates = 0
        self.imported = 0

    def add(self, counter: Any, labels: tuple[str, ...]) -> None:
        key = (counter, labels)
        self.counts[key] = self.counts.get(key, 0) + 1

    def publish(self, log: logging.Logger) -> None:
        for (counter, labels), n in self.counts.items():
            counter.labels(*labels).inc(n)
        if self.duplicates:
            metrics.DUPLICATES.inc(self.duplicates)
        if self.notice_duplicates:
            metrics.DUPLICATES_NOTICES.inc(self.notice_duplicates)
        if self.imported:
            log.info("%d imported objections applied", self.imported)


class Batcher:
    """Holds the events taken from `stream` and hands them to `apply` in batches, then
    acknowledges them (faust's own acks must be off: `stream.enable_acks = False`)."""

    def __init__(self, stream: Any, apply: Callable[[list[Any]], Awaitable[None]], max_events: int = BATCH_EVENTS,
                 idle_flush: float = IDLE_FLUSH_SECONDS) -> None:
        self._stream = stream
        self._apply = apply
        self._max = max_events
        self._idle_flush = idle_flush
        self._held: list[Any] = []
        self._taken = 0
        self._lock = asyncio.Lock()
        queue = getattr(stream.channel, "queue", None)  # faust's ChannelT.queue: what has arrived
        self._nothing_waiting: Callable[[], bool] = queue.empty if queue is not None else (lambda: True)

    async def add(self, event: Any) -> None:
        held = self._held
        held.append(event)
        self._taken += 1
        if len(held) >= self._max or self._nothing_waiting():
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:  # batches are applied one after the other, in the order taken
            events, self._held = self._held, []
            if not events:
                return
            await self._apply(events)
            ack = self._stream.ack
            for event in events:
                await ack(event)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Batcher]:
        watchdog = asyncio.ensure_future(self._watch())
        try:
            yield self
        finally:
            # Events still held are neither applied nor acknowledged: never committed, they
            # are read again by whoever owns their partition next.
            watchdog.cancel()

    async def _watch(self) -> None:
        seen = -1
        while True:
            await asyncio.sleep(self._idle_flush)
            if self._held and self._taken == seen:
                await self.flush()
            seen = self._taken
