"""Where a user's messages live: murmur2(user_id) like the Java client and aiokafka.

Every user-keyed topic Consentry writes (objections, consent state, receipts, posts by
user, training.posts) has the same partition count, so a user's objections, state, posts
and purge markers share one partition number: their "home" partition.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 20)
def home_partition(user_id: str, partitions: int) -> int:
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions
