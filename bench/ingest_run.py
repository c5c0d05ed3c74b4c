"""3. Consentry's ingest service (the real IngestWorker) over a backlog of posts.

Runs the worker in this process, with the settings a deployment has (from the
environment), and times it from the first batch of posts it handles until every post is
decided, forwarded, acknowledged and its offset committed.

    CONSENTRY_* env ... python -m bench.ingest_run EXPECTED_POSTS
"""

from __future__ import annotations

import asyncio
import sys
import time

from bench.common import emit
from consentry.logs import configure
from consentry.runtime import tune_gc
from services.ingest import metrics
from services.ingest.settings import IngestSettings
from services.ingest.worker import IngestWorker


def _total(counter) -> float:  # type: ignore[no-untyped-def]
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


async def main(expected: int) -> dict:
    settings = IngestSettings()
    worker = IngestWorker(settings)
    first: list[float] = []
    handle = worker._handle_posts

    handled = [0]
    everything = asyncio.Event()

    def timed(batch):  # type: ignore[no-untyped-def]
        if not first and batch:
            first.append(time.perf_counter())
            first.append(time.process_time())
        result = handle(batch)
        handled[0] += sum(len(records) for records in batch.values())
        if handled[0] >= expected:
            everything.set()
        return result

    worker._handle_posts = timed  # type: ignore[method-assign]
    await worker.start()
    runner = asyncio.create_task(worker.run())
    try:
        # Woken by the last batch itself: no polling, whose CPU would count as ingest's.
        waiting = asyncio.ensure_future(everything.wait())
        await asyncio.wait({runner, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not everything.is_set():
            waiting.cancel()
            runner.result()
            raise RuntimeError("ingest stopped early")
        # Everything handled; once the worker lets go of its lock, it is acknowledged and committed.
        async with worker._lock:
            await worker._flush_and_commit()
        finished, cpu_finished = time.perf_counter(), time.process_time()
    finally:
        worker._stopping.set()
        await runner
        await worker.stop()
    seconds = finished - first[0]
    return {
        "posts": int(_total(metrics.POSTS_IN)),
        "accepted": int(_total(metrics.ACCEPTED)),
        "dropped": int(_total(metrics.DROPPED)),
        "drop_count_records": int(_total(metrics.DROP_COUNT_RECORDS)),
        "rejected": int(_total(metrics.REJECTED)),
        "seconds": seconds,
        "rate": expected / seconds,
        "cpu_seconds": cpu_finished - first[1],  # this process's CPU: what the machine's other load does not inflate
    }


if __name__ == "__main__":
    configure("ingest-bench", "WARNING")
    tune_gc()  # as `consentry ingest` does
    emit(asyncio.run(main(int(sys.argv[1]))))
