"""Posts framed as a Confluent-compatible Schema Registry JSON serializer frames them (magic
byte 0, the schema id as 4 bytes big-endian, then the JSON), and the reason code of a value
framed otherwise: bad_framing (consentry.wire.unframe, CONSENTRY_POSTS_FRAMING)."""

from __future__ import annotations

import orjson
import pytest

from consentry.contract import POST_REASON_CODES
from consentry.domain.model import Invalid, Post
from consentry.wire import frame, parse_post, unframe
from services.ingest.settings import IngestSettings

POST = {"post_id": "p-1", "user_id": "u-42", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "Bonjour !"}
JSON = orjson.dumps(POST)


def test_a_framed_post_unframes_to_its_json_whatever_the_schema_id() -> None:
    for schema_id in (0, 1, 7, 2**31 - 1, 2**32 - 1):
        framed = frame(JSON, schema_id)
        assert framed[:5] == b"\x00" + schema_id.to_bytes(4, "big")
        assert unframe(framed) == JSON
        assert type(parse_post(unframe(framed), b"u-42")) is Post  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "says"),
    [(JSON, "plain JSON"), (b" " + JSON, "plain JSON"), (b"\x01\x00\x00\x00\x07" + JSON, "0x01"), (b"\x00\x00\x00\x07", "4 bytes"), (b"", "0 bytes")],
)
def test_other_framings_are_refused_with_bad_framing(value: bytes, says: str) -> None:
    refused = unframe(value)

    assert type(refused) is Invalid and refused.code == "bad_framing"
    assert says in refused.detail and "schema-registry" in refused.detail
    assert "Bonjour" not in refused.reason  # never the post's text


def test_no_value_stays_no_value() -> None:
    assert unframe(None) is None
    assert parse_post(None, b"u-42") == Invalid("empty", "message has no value")


def test_a_framed_post_read_as_plain_json_says_which_setting_is_missing() -> None:
    refused = parse_post(frame(JSON, 12), b"u-42")

    assert type(refused) is Invalid and refused.code == "bad_framing"
    assert "schema id 12" in refused.detail and "CONSENTRY_POSTS_FRAMING=schema-registry" in refused.detail
    assert parse_post(b"\x00", b"u-42").code == "invalid_json"  # type: ignore[union-attr]  # too short for a header


def test_bad_framing_is_a_documented_reason_code() -> None:
    assert "bad_framing" in POST_REASON_CODES


def test_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert IngestSettings().posts_framing == "json"
    monkeypatch.setenv("CONSENTRY_POSTS_FRAMING", "schema-registry")
    assert IngestSettings().posts_framing == "schema-registry"
    monkeypatch.setenv("CONSENTRY_POSTS_FRAMING", "avro")
    with pytest.raises(ValueError):
        IngestSettings()
