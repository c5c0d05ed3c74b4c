"""The training store's bucket of a user: stable, in range, and, when the bucket count is a
multiple of the partition count, in the user's home partition's set of buckets (so each sink
writes only the buckets of the Kafka partitions it owns)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consentry.partitioning import bucket_of, home_partition


@given(st.text(min_size=1, max_size=40), st.sampled_from([1, 2, 3, 4, 8, 16]), st.sampled_from([16, 48, 64, 256]))
def test_a_users_bucket_is_in_range_and_follows_the_home_partition(user: str, partitions: int, buckets: int) -> None:
    bucket = bucket_of(user, buckets)
    assert 0 <= bucket < buckets
    if buckets % partitions == 0:
        assert bucket % partitions == home_partition(user, partitions)


def test_known_values_do_not_change_between_releases() -> None:
    """A table's rows stay in the bucket they were written to: the hash is fixed."""
    assert [bucket_of(u, 64) for u in ("alice", "bob", "u-42")] == [21, 14, 57]


@given(st.binary(max_size=64))
def test_the_projects_murmur2_is_kafkas(data: bytes) -> None:
    """consentry.partitioning.murmur2 reads words with struct; aiokafka's (the Java client's
    arithmetic, byte by byte) is the reference: producers outside Consentry partition with it."""
    from aiokafka.partitioner import murmur2 as kafkas

    from consentry.partitioning import murmur2

    assert murmur2(data) == kafkas(data)
