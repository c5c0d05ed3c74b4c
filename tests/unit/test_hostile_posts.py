"""Every hostile `posts` message gets the verdict the contract implies, with a reason that
names what is wrong, and no input makes the parser (or anything after it) raise."""

from __future__ import annotations

import random

import orjson
import pytest

from consentry.domain.model import Invalid, Post
from consentry.wire import encode_training_post, parse_objection, parse_post, parse_receipt, parse_training_message
from consentry.timeutil import format_rfc3339, parse_rfc3339
from tests.support.hostile import BAD_TIMESTAMPS, DROPPED, DUPLICATE, GOOD_TIMESTAMPS, STORED, hostile_posts


def test_each_generated_message_gets_its_expected_verdict() -> None:
    rng = random.Random(20250527)
    seen: dict[str, int] = {}
    for case in hostile_posts(rng, 20_000, "unit"):
        result = parse_post(case.value, case.key)
        if case.verdict in (STORED, DROPPED, DUPLICATE):
            assert type(result) is Post, f"{case.label}: {result}"
            # What ingest would forward must encode and decode back for the sink.
            assert type(parse_training_message(encode_training_post(result, 0))) is dict
        else:
            assert type(result) is Invalid, f"{case.label}: accepted"
            assert result.code == case.verdict, f"{case.label}: {result.reason}"
            if case.field is not None:
                assert case.field in result.detail, f"{case.label}: reason does not name {case.field}: {result.reason}"
            assert case.text is None or case.text not in result.reason  # never echoes post text
        seen[case.label] = seen.get(case.label, 0) + 1
    assert len(seen) > 30  # every kind of damage was generated


@pytest.mark.parametrize("value", BAD_TIMESTAMPS)
def test_timestamps_that_are_not_rfc3339_or_out_of_range_are_refused(value: str) -> None:
    assert parse_rfc3339(value) is None


@pytest.mark.parametrize("value", GOOD_TIMESTAMPS)
def test_rfc3339_timestamps_round_trip_through_the_wire_format(value: str) -> None:
    us = parse_rfc3339(value)
    assert us is not None
    assert parse_rfc3339(format_rfc3339(us)) == us


def test_years_before_1000_keep_four_digits() -> None:
    assert format_rfc3339(parse_rfc3339("0005-01-01T00:00:00Z")) == "0005-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "value",
    [
        b'{"objection_id": "o", "user_id": "u", "kind": ["object"], "received_at": "2025-05-27T10:00:00Z", "channel": "web"}',
        b'{"objection_id": "o", "user_id": "u", "kind": "object", "received_at": "2025-05-27T10:00:00Z", "channel": {"web": 1}}',
        b'{"objection_id": "o", "user_id": "u", "kind": "object", "received_at": "0001-01-01T00:00:00+01:00", "channel": "web"}',
        b'{"objection_id": "o", "user_id": "u", "kind": "object", "received_at": 5, "channel": "web"}',
        b"[]",
    ],
)
def test_hostile_objection_events_are_invalid_not_exceptions(value: bytes) -> None:
    assert type(parse_objection(value)) is Invalid


@pytest.mark.parametrize(
    "receipt",
    [{"type": "purged", "user_id": "u", "objection_ids": ["o"], "at": 5}, {"type": ["purged"]}, {"type": "enforced", "user_id": "u", "objection_ids": "o", "at": "2025-05-27T10:00:00Z"}],
)
def test_hostile_receipts_are_invalid_not_exceptions(receipt: dict) -> None:
    assert type(parse_receipt(orjson.dumps(receipt))) is Invalid


@pytest.mark.parametrize(
    "message",
    [
        {"type": "post", "post_id": "p", "user_id": "u", "created_at": "1-01-01T00:00:00Z", "text": "t", "ingested_at": "2025-05-27T10:00:00Z"},
        {"type": "post", "post_id": "p", "user_id": "u", "created_at": "2025-05-27T10:00:00Z", "text": "t", "ingested_at": "2025-05-27T10:00:00Z", "lang": 5},
        {"type": "purge", "user_id": "u", "objection_ids": "abc", "marked_at": "2025-05-27T10:00:00Z"},
        {"type": "purge", "user_id": "u", "objection_ids": [], "marked_at": 17},
    ],
)
def test_training_messages_the_store_could_not_take_are_invalid(message: dict) -> None:
    assert type(parse_training_message(orjson.dumps(message))) is Invalid
