"""Token buckets: a burst is allowed, then one request per 1/rate seconds."""

from services.gateway.ratelimit import RateLimiter


def test_a_burst_passes_then_the_next_request_waits_for_a_token() -> None:
    limiter = RateLimiter(rate_per_s=0.5, burst=3)
    assert [limiter.take("alice", now=100.0).allowed for _ in range(3)] == [True, True, True]
    refused = limiter.take("alice", now=100.0)
    assert not refused.allowed and refused.retry_after_s == 2
    assert not limiter.take("alice", now=101.0).allowed  # half a token back
    assert limiter.take("alice", now=102.5).allowed


def test_buckets_are_per_key() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1)
    assert limiter.take("alice", now=0).allowed
    assert not limiter.take("alice", now=0).allowed
    assert limiter.take("bob", now=0).allowed


def test_tokens_never_pile_up_beyond_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=2)
    limiter.take("alice", now=0)
    assert [limiter.take("alice", now=3600).allowed for _ in range(3)] == [True, True, False]


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    limiter = RateLimiter(rate_per_s=100, burst=1)
    limiter.take("a", now=0)
    assert limiter.take("a", now=0).retry_after_s == 1
    slow = RateLimiter(rate_per_s=1 / 30, burst=1)
    slow.take("a", now=0)
    assert slow.take("a", now=10).retry_after_s == 20


def test_a_zero_rate_turns_the_limit_off() -> None:
    limiter = RateLimiter(rate_per_s=0, burst=1)
    assert all(limiter.take("a", now=0).allowed for _ in range(1000))
    assert len(limiter) == 0


def test_the_least_recently_used_buckets_are_forgotten_first() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_keys=2)
    limiter.take("a", now=0)
    limiter.take("b", now=0)
    limiter.take("a", now=0)  # refused, but "a" is now the most recent
    limiter.take("c", now=0)  # evicts "b"
    assert len(limiter) == 2
    assert limiter.take("b", now=0).allowed  # a fresh bucket
    assert not limiter.take("c", now=0).allowed
