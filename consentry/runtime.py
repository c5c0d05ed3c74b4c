"""Process-wide settings of a service process (its `__main__`, never a library import)."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Fewer, later garbage collections. A service holds large, long-lived structures (the
    gateway's receipt and verified-token caches, ingest's consent view of up to millions of
    users), and each full collection walks them all: with the default thresholds that showed
    as 100 ms latency tails on the gateway (docs/benchmarks.md). What exists at start-up is
    frozen out of collection; reference counting still frees at once everything that is not
    in a cycle, so memory does not grow from this."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
