"""How the consent agent groups events into batches, and what a batch keeps per user.

The agent takes events from faust one by one (`stream.events()`, with faust's acks off) and
holds them for at most BATCH_WINDOW_SECONDS after the first, or until BATCH_EVENTS, then
applies them together and acknowledges them. Why a time window, and not "whatever has
already arrived": faust's consumer hands the stream one event per turn of the event loop
(`Consumer._drain_messages` awaits each delivery), so nothing is ever waiting in the queue;
and the savings come from doing per batch what faust does per turn (a produce request for the
changelog, a task per delivery).

A timer applies what is held when the window ends, also while the agent waits for an event
that will not come: a rebalance or a stop clears the stream's queue and then waits, with no
time limit, for every event taken to be acknowledged (faust's `Consumer.wait_empty`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services.consent import metrics

BATCH_EVENTS = 2000
BATCH_WINDOW_SECONDS = 0.01


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
    """Holds the events taken from a stream and hands them to `apply` in batches, then
    acknowledges them (faust's own acks must be off: `stream.enable_acks = False`)."""

    def __init__(self, stream: Any, apply: Callable[[list[Any]], Awaitable[None]], max_events: int = BATCH_EVENTS,
                 window: float = BATCH_WINDOW_SECONDS) -> None:
        self._stream = stream
        self._apply = apply
        self._max = max_events
        self._window = window
        self._held: list[Any] = []
        self._batch = 0  # the number of the batch being held
        self._first_at = 0.0
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._due_flush: asyncio.Future[None] | None = None

    async def add(self, event: Any) -> None:
        held = self._held
        held.append(event)
        now = time.monotonic()
        if len(held) == 1:
            self._first_at = now
            self._timer = asyncio.get_running_loop().call_later(self._window, self._window_ended, self._batch)
        if len(held) >= self._max or now - self._first_at >= self._window:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:  # batches are applied one after the other, in the order taken
            events, self._held = self._held, []
            self._batch += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not events:
                return
            await self._apply(events)
            ack = self._stream.ack
            for event in events:
                await ack(event)

    def _window_ended(self, batch: int) -> None:
        if batch == self._batch and self._held:
            self._due_flush = asyncio.ensure_future(self.flush())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Batcher]:
        try:
            yield self
        finally:
            # The agent ends (its stream stopped, or it was cancelled): what is still held is
            # applied and acknowledged, like faust finishes an event in flight. In a worker that
            # stops, faust has already waited for every event taken to be acknowledged (the
            # timer applied them), so this is for the agent's test context.
            if self._held:
                await self.flush()
