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


def bucket_of(user_id: str, buckets: int) -> int:
    """The training store's bucket of a user (its partition column): the same murmur2 as
    `home_partition`, so with `buckets` a multiple of the partition count, bucket % partitions
    is the home partition and each sink writes only the buckets of the partitions it owns.
    A number out of `buckets`: it does not reveal the id."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % buckets
