"""What ingest writes to training.posts: timestamps always in one form, UTC with a "Z",
whatever form the upstream producer used (the encoder takes shortcuts on the hot path)."""

from __future__ import annotations

import orjson
import pytest

from consentry.domain.model import Post
from consentry.wire import encode_training_post, parse_post
from consentry.timeutil import format_rfc3339, parse_rfc3339


def training_record(created_at: str, ingested_at_us: int = 1_748_340_001_000_000) -> dict:
    value = orjson.dumps({"post_id": "p-1", "user_id": "u-42", "created_at": created_at, "visibility": "public", "text": "Bonjour !"})
    post = parse_post(value, b"u-42")
    assert type(post) is Post, post
    return orjson.loads(encode_training_post(post, ingested_at_us))


@pytest.mark.parametrize(
    ("received", "written"),
    [
        ("2025-05-27T10:00:00Z", "2025-05-27T10:00:00Z"),
        ("2025-05-27T10:00:00.123456Z", "2025-05-27T10:00:00.123456Z"),
        ("2025-05-27T10:00:00.000000Z", "2025-05-27T10:00:00Z"),
        ("2025-05-27T10:00:00.5Z", "2025-05-27T10:00:00.500000Z"),
        ("2025-05-27T12:00:00+02:00", "2025-05-27T10:00:00Z"),
        ("2025-05-27 10:00:00Z", "2025-05-27T10:00:00Z"),
    ],
)
def test_created_at_is_written_in_utc_with_a_z_whatever_form_it_came_in(received: str, written: str) -> None:
    assert training_record(received)["created_at"] == written


def test_each_post_carries_its_own_ingestion_time() -> None:
    first = training_record("2025-05-27T10:00:00Z", ingested_at_us=1_748_340_001_000_000)
    second = training_record("2025-05-27T10:00:00Z", ingested_at_us=1_748_340_002_500_000)
    assert first["ingested_at"] == "2025-05-27T10:00:01Z"
    assert second["ingested_at"] == "2025-05-27T10:00:02.500000Z"


@pytest.mark.parametrize("us", [0, -1, 1_748_340_000_123_456, 1_748_340_000_000_000, 253_402_300_799_999_999, -62_135_596_800_000_000])
def test_formatted_timestamps_read_back_to_the_same_microsecond(us: int) -> None:
    text = format_rfc3339(us)
    assert text.endswith("Z") and text[4] == "-" and text[10] == "T"
    assert parse_rfc3339(text) == us
