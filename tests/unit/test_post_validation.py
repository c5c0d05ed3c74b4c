"""What ingest accepts from `posts`, and the precise reason for what it rejects."""

from __future__ import annotations

import orjson
import pytest

from consentry.domain.model import MAX_POST_BYTES, Invalid, Post
from consentry.wire import encode_rejection, parse_post

GOOD = {
    "post_id": "p-1",
    "user_id": "u-42",
    "created_at": "2025-05-27T10:00:00Z",
    "visibility": "public",
    "text": "Bonjour !",
    "lang": "fr",
    "country": "FR",
    "author_is_minor": False,
}


def with_(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_a_valid_post_parses_with_defaults() -> None:
    minimal = orjson.dumps({k: GOOD[k] for k in ("post_id", "user_id", "created_at", "visibility", "text")} | {"extra": 1})
    post = parse_post(minimal, b"u-42")
    assert post == Post("p-1", "u-42", 1748340000000000, "public", "Bonjour !", None, None, False)


def test_offsets_are_normalised_to_utc() -> None:
    post = parse_post(with_(created_at="2025-05-27T12:00:00+02:00"), b"u-42")
    assert type(post) is Post and post.created_at_us == 1748340000000000


@pytest.mark.parametrize(
    ("value", "key", "code", "detail_part"),
    [
        (b"not json", b"u-42", "invalid_json", "not valid"),
        (b"\xff\xfe", b"u-42", "invalid_json", "not valid"),
        (b"[1, 2]", b"u-42", "not_an_object", "list"),
        (b'"text"', b"u-42", "not_an_object", "str"),
        (with_(post_id=...), b"u-42", "missing_field", "post_id"),
        (with_(user_id=...), b"u-42", "missing_field", "user_id"),
        (with_(created_at=...), b"u-42", "missing_field", "created_at"),
        (with_(visibility=...), b"u-42", "missing_field", "visibility"),
        (with_(text=...), b"u-42", "missing_field", "text"),
        (with_(post_id=7), b"u-42", "wrong_type", "post_id"),
        (with_(text=["a"]), b"u-42", "wrong_type", "text"),
        (with_(created_at=1716800000), b"u-42", "wrong_type", "created_at"),
        (with_(author_is_minor=None), b"u-42", "wrong_type", "author_is_minor"),
        (with_(author_is_minor="false"), b"u-42", "wrong_type", "author_is_minor"),
        (with_(lang=5), b"u-42", "wrong_type", "lang"),
        (with_(post_id=""), b"u-42", "bad_value", "post_id"),
        (with_(post_id="x" * 257), b"u-42", "bad_value", "post_id"),
        (with_(visibility="everyone"), b"u-42", "bad_value", "visibility"),
        (with_(country="France"), b"u-42", "bad_value", "country"),
        (with_(country="fr"), b"u-42", "bad_value", "country"),
        (with_(created_at="2025-05-27"), b"u-42", "bad_timestamp", "created_at"),
        (with_(created_at="2025-05-27T10:00:00"), b"u-42", "bad_timestamp", "time zone"),
        (with_(created_at="yesterday at noon, roughly"), b"u-42", "bad_timestamp", "created_at"),
        (with_(created_at="2025-13-45T10:00:00Z"), b"u-42", "bad_timestamp", "created_at"),
        (with_(text="a\x00b"), b"u-42", "null_byte", "text"),
        (with_(user_id="u\x0042"), b"u\x0042", "null_byte", "user_id"),
        (with_(), b"u-43", "key_mismatch", "differs"),
        (with_(), None, "key_mismatch", "no key"),
        (None, b"u-42", "empty", "no value"),
        (b" " * (MAX_POST_BYTES + 1), b"u-42", "too_large", "1 MiB"),
    ],
)
def test_invalid_posts_are_rejected_with_a_precise_reason(value, key, code, detail_part) -> None:  # type: ignore[no-untyped-def]
    result = parse_post(value, key)
    assert type(result) is Invalid
    assert result.code == code
    assert detail_part in result.detail


def test_reasons_never_quote_the_post_text() -> None:
    secret = "my private diary entry"
    for value in (with_(text=secret, created_at="nope"), with_(text=secret, visibility="x"), with_(text=secret + "\x00")):
        result = parse_post(value, b"u-42")
        assert type(result) is Invalid and secret not in result.reason


def test_a_post_of_exactly_one_mib_is_accepted() -> None:
    head = with_(text="")
    padding = MAX_POST_BYTES - len(head)
    value = with_(text="a" * padding)
    assert len(value) == MAX_POST_BYTES
    assert type(parse_post(value, b"u-42")) is Post


def test_rejection_record_carries_location_and_a_truncated_value() -> None:
    raw = b"x" * 10_000
    record = orjson.loads(encode_rejection(Invalid("invalid_json", "bad"), "posts", 3, 17, raw, 1748340000000000))
    assert record["reason"] == "invalid_json: bad"
    assert (record["topic"], record["partition"], record["offset"]) == ("posts", 3, 17)
    assert record["received_at"] == "2025-05-27T10:00:00Z"
    assert len(record["value"]) == 4096 and record["value_truncated"] is True and record["value_bytes"] == 10_000
