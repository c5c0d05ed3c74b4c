"""Housekeeping of the training store, inside the sink: compaction of the small files that
one-second flushes write, and the vacuum that makes purges physical, each on its schedule.

One replica does it at a time: the one that owns partition 0 of training.posts (as for the
reconciliation pass). Any replica could do it safely: both go through Delta commits (a
compaction that a purge overtook is done again on the new version), and the vacuum never
deletes a file no commit references until it is ORPHAN_GRACE_HOURS old (a running write's).
The vacuum's schedule counts from the table's vacuum record, so a `consentry vacuum` run (by
hand or a CronJob) counts too; every run writes it, and the sink shows it
(consentry_sink_last_vacuum_timestamp, alert ConsentryVacuumOverdue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from services.sink import metrics
from services.sink.settings import SinkSettings
from services.sink.store import CompactResult, TrainingStore

log = logging.getLogger(__name__)

FIRST_DELAY_S = 60.0  # the first compaction and vacuum after start (sooner if the interval is shorter)
RETRY_S = 300.0  # after a failed run (sooner if the interval is shorter)


class Housekeeping:
    """`await Housekeeping(...).run()` until `stopping` is set. `store` is the task's own store
    object (its runs happen in a thread); `owner()` says whether this replica vacuums now;
    `compaction_scope()` which buckets it compacts and whether nothing else writes into them
    while it holds `writes` (the sink's own buckets, its flushes held: the files of a compaction
    that a purge overtook are then deleted at once, see `TrainingStore.compact`); by default the
    owner compacts every bucket. `sleep(seconds)` returns early when the sink stops."""

    def __init__(self, settings: SinkSettings, store: TrainingStore, owner: Callable[[], bool],
                 sleep: Callable[[float], Awaitable[None]], stopping: asyncio.Event, chores: asyncio.Lock | None = None,
                 compaction_scope: Callable[[], tuple[list[int] | None, bool]] | None = None, writes: asyncio.Lock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.owner = owner
        self.compaction_scope = compaction_scope or (lambda: (None, False) if owner() else ([], False))
        self.writes = writes or asyncio.Lock()
        self.sleep = sleep
        self.stopping = stopping
        self.chores = chores or asyncio.Lock()  # shared with the reconciliation pass: one table chore at a time
        now = time.time()
        self.next_compaction = now + min(settings.compact_interval_s, FIRST_DELAY_S)
        # Not at once either: a sink that restarts in a loop must not vacuum in a loop.
        self.vacuum_retry_at = now + min(settings.vacuum_interval_s, FIRST_DELAY_S)
        metrics.VACUUM_INTERVAL.set(settings.vacuum_interval_s)

    async def run(self) -> None:
        s = self.settings
        while not self.stopping.is_set():
            waits = [30.0]  # re-read the vacuum record at least this often: `consentry vacuum` may run
            async with self.chores:
                if s.compact_interval_s > 0:
                    if time.time() >= self.next_compaction:
                        await self._compact()
                    waits.append(self.next_compaction - time.time())
                if not self.owner():
                    waits.append(5.0)
                elif s.vacuum_interval_s > 0:
                    if time.time() >= await self._vacuum_due():
                        await self._vacuum()
                    waits.append(await self._vacuum_due() - time.time())
                self.store.release()  # no snapshot of the log kept between runs: memory does not follow the file count
            await self.sleep(max(min(waits), 0.05))

    async def _vacuum_due(self) -> float:
        try:
            record = await asyncio.to_thread(self.store.vacuum_record)
        except Exception:
            metrics.ERRORS.labels("housekeeping").inc()
            log.warning("could not read the vacuum record of %s: vacuuming on this sink's own schedule", self.store.uri, exc_info=True)
            record = None  # as if never vacuumed: the vacuum writes a new one
        last = record.last_ended_at_us / 1e6 if record is not None else 0.0
        return max(last + self.settings.vacuum_interval_s, self.vacuum_retry_at)

    async def _compact(self) -> None:
        interval = self.settings.compact_interval_s
        started = time.monotonic()
        buckets, exclusive = self.compaction_scope()
        try:
            if buckets is None:
                result = await asyncio.to_thread(self.store.compact)  # into files of the table's size
            else:  # one bucket at a time, the flushes held for each: a few seconds at most
                result = CompactResult(0, 0, 0)
                for bucket in buckets:
                    async with self.writes:
                        done = await asyncio.to_thread(self.store.compact, None, [bucket], exclusive)
                    result = CompactResult(result.files_removed + done.files_removed, result.files_added + done.files_added, done.version)
        except Exception:
            metrics.ERRORS.labels("compact").inc()
            log.exception("compaction of %s failed; trying again in %.0fs", self.store.uri, min(interval, RETRY_S))
            self.next_compaction = time.time() + min(interval, RETRY_S)
            return
        metrics.HOUSEKEEPING_SECONDS.labels("compact").observe(time.monotonic() - started)
        metrics.LAST_COMPACTION.set(time.time())
        metrics.COMPACTED_FILES.inc(result.files_removed)
        self.next_compaction = time.time() + interval
        if result.files_removed:
            log.info("compacted %s: %d small files into %d (version %d)", self.store.uri, result.files_removed, result.files_added, result.version)

    async def _vacuum(self) -> None:
        interval = self.settings.vacuum_interval_s
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(self.store.vacuum)
        except Exception:
            metrics.ERRORS.labels("vacuum").inc()
            log.exception("vacuum of %s failed; trying again in %.0fs", self.store.uri, min(interval, RETRY_S))
            self.vacuum_retry_at = time.time() + min(interval, RETRY_S)
            return
        # Also without a record (its write can fail after the vacuum): not again before the interval.
        self.vacuum_retry_at = time.time() + interval
        metrics.HOUSEKEEPING_SECONDS.labels("vacuum").observe(time.monotonic() - started)
        metrics.VACUUM_FILES.inc(result.files_removed)
        record = await asyncio.to_thread(self.store.vacuum_record)
        if record is not None:  # the gauges the alert reads, at once (not at the next stats refresh)
            metrics.VACUUM_RUNS.runs = record.runs
            metrics.LAST_VACUUM.set(record.last_ended_at_us / 1e6)
            metrics.LAST_VACUUM_FILES.set(record.last_files_removed)
        log.info("vacuumed %s: %d files removed (version %d)", self.store.uri, result.files_removed, result.version)
