"""Token buckets, per user and per client address, kept in memory (one set per replica).

Pure: the caller passes the clock, so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: int  # whole seconds until one token is back (0 when allowed)


ALLOWED = Verdict(True, 0)


class RateLimiter:
    """`rate_per_s` tokens a second, at most `burst` saved up; `rate_per_s <= 0` disables it.

    At most `max_keys` buckets are kept: the least recently used go first (a forgotten key
    starts again with a full bucket, which only ever errs towards letting a request in).
    """

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float) -> Verdict:
        if not self.enabled:
            return ALLOWED
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return ALLOWED
        # The epsilon keeps float noise (20.000000004 s) from adding a whole second.
        return Verdict(False, max(1, math.ceil((1.0 - bucket.tokens) / self.rate - 1e-9)))

    def __len__(self) -> int:
        return len(self._buckets)
