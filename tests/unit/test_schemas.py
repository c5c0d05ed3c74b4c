"""schemas/: the JSON Schemas generated from consentry/contract.py, the declarations the wire
validates with. The committed files are what the code declares, and the code and the schemas
(the jsonschema package) accept and refuse the same corpus, but for the rules JSON Schema
cannot express, which the schemas' descriptions name: canonical identifiers beyond control
characters and surrounding whitespace (NFC, format characters: `not_canonical`), the calendar
and the UTC bounds of a timestamp (`bad_timestamp`), and what lies outside the JSON document
(the 1 MiB size, the record key, bytes that are not JSON)."""

from __future__ import annotations

import calendar
import json
import random
import re
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from consentry.contract import MESSAGES, NOTICE, OBJECTION, POST, POST_REASON_CODES, PURGE_MARKER, REJECTION, TRAINING_POST, json_schema, schema_files
from consentry.domain.model import Invalid, identifier_problem, Notice, ObjectionEvent, Post, PurgeMarker
from consentry.wire import encode_purge_marker, encode_rejection, encode_training_post, parse_notice, parse_post
from consentry.wire import objection_from_dict
from tests.support.hostile import BAD_TIMESTAMPS, GOOD_TIMESTAMPS, STORED, DROPPED, DUPLICATE, hostile_posts

ROOT = Path(__file__).resolve().parents[2]
# What the code may refuse while the schema accepts: the rules a schema cannot express.
INEXPRESSIBLE = {"not_canonical", "bad_timestamp"}
# What lies outside the JSON document the schema judges.
OUTSIDE_THE_DOCUMENT = {"empty", "too_large", "invalid_json", "key_mismatch"}


def validator(message) -> jsonschema.Draft7Validator:  # type: ignore[no-untyped-def]
    schema = json.loads((ROOT / "schemas" / message.file).read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_committed_schemas_are_what_the_code_declares() -> None:
    """Stale files fail here: `consentry schemas` (or `make schemas`) rewrites them."""
    committed = {p.name: p.read_text() for p in (ROOT / "schemas").glob("*.json")}

    assert committed == schema_files(), "schemas/ is stale: run `consentry schemas`"


def test_consentry_schemas_check_finds_a_stale_file_and_rewrites_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from consentry_cli.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["schemas", "--dir", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["schemas", "--dir", str(tmp_path), "--check"]).exit_code == 0
    stale = tmp_path / POST.file
    stale.write_text(stale.read_text().replace('"maxLength": 256', '"maxLength": 255'))

    assert runner.invoke(app, ["schemas", "--dir", str(tmp_path), "--check"]).exit_code == 1
    assert runner.invoke(app, ["schemas", "--dir", str(tmp_path)]).exit_code == 0
    assert stale.read_text() == schema_files()[POST.file]


@pytest.mark.parametrize("message", MESSAGES, ids=[m.name for m in MESSAGES])
def test_every_schema_is_valid_draft_7_and_says_what_it_cannot_express(message) -> None:  # type: ignore[no-untyped-def]
    schema = json_schema(message)
    jsonschema.Draft7Validator.check_schema(schema)
    kinds = {f.kind for f in message.fields}
    if "id" in kinds:
        assert "not_canonical" in schema["description"] and "NFC" in schema["description"]
    if "timestamp" in kinds:
        assert "bad_timestamp" in schema["description"]


# ------------------------------------------------------------------ the same verdicts


def verdicts_agree(code: Invalid | Any, schema_errors: list[str], obj: Any, what: str) -> None:
    """The code's verdict (Invalid or a parsed message) and the schema's must agree, but
    where the code applies a rule the schema cannot express."""
    code_accepts = type(code) is not Invalid
    schema_accepts = not schema_errors
    if code_accepts:
        assert schema_accepts, f"{what}: the code accepts, the schema refuses: {schema_errors}"
        return
    if schema_accepts:
        assert code.code in INEXPRESSIBLE, f"{what}: the code refuses ({code.reason}), the schema accepts"
        name = re.search(r"'(\w+)'", code.detail)[1]  # type: ignore[index]
        if code.code == "not_canonical":  # the pattern held: only NFC or a format character may have failed
            value = obj[name]
            assert not any(unicodedata.category(c) == "Cc" for c in value) and value == value.strip(), f"{what}: {value!r}"
            assert identifier_problem(value) in ("is not in Unicode NFC", "contains a control or format character"), f"{what}: {value!r}"
        if code.code == "bad_timestamp":  # the pattern held: only the calendar or the bounds may have failed
            assert beyond_the_pattern(obj[name]), f"{what}: {obj[name]!r} refused by the code for a rule the pattern holds"


def beyond_the_pattern(value: str) -> bool:
    """A day the month does not have, or an instant outside years 1 to 9999 once in UTC."""
    year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    if day > calendar.monthrange(year, month)[1]:
        return True
    return year in (1, 9999) and value[-1] not in "Zz" and value[-6:] not in ("+00:00", "-00:00")


def test_the_code_and_the_post_schema_judge_the_hostile_corpus_alike() -> None:
    schema = validator(POST)
    rng = random.Random(17)
    seen: set[str] = set()
    for case in hostile_posts(rng, 4000, "schema", big=False):
        if case.value is None:
            continue
        code = parse_post(case.value, case.key)
        if type(code) is Invalid:
            seen.add(code.code)
            assert code.code in POST_REASON_CODES
            if code.code in OUTSIDE_THE_DOCUMENT:
                continue
        else:
            assert case.verdict in (STORED, DROPPED, DUPLICATE), case.label
        obj = orjson.loads(case.value)
        verdicts_agree(code, [e.message for e in schema.iter_errors(obj)], obj, case.label)
    assert {"missing_field", "wrong_type", "bad_value", "null_byte", "bad_timestamp", "not_an_object"} <= seen


# Values that break one field each: every kind of wrong type, limit, character and form.
HOSTILE_VALUES: list[Any] = [
    None, 42, 1.5, True, False, [], ["x"], {}, {"id": "u"}, "", "x", "h" * 35, "h" * 36, "h" * 256, "h" * 257, "h" * 2001,
    "a\x00b", "\x00", " lead", "trail ", "\ttab", "a\nb", "line\n", "a\x7fb", "a\x85b", "\u00a0nbsp", "nbsp\u00a0", "\u3000ideo",
    "e\u0301", "\u00e9", "a\u200bb", "\ufeffbom", "\u202eltr", "Alice", "ALICE", "u-42", "réné", "日本", "🙂",
    "FR", "fr", "FRA", "F1", "ＦＲ", "FR\n", "public", "PUBLIC", "friends", "object", "withdraw", "web", "import", "email", "in_app", "app",
    *GOOD_TIMESTAMPS, *BAD_TIMESTAMPS, "2025-05-27T10:00:00Z\n", "2025-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2025-04-31T00:00:00Z",
    "2025-05-27T10:00:00+23:59", "2025-05-27T10:00:00.123456789Z",
]

VALID = {
    "Post": {"post_id": "p-1", "user_id": "u-42", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "Bonjour !",
             "lang": "fr", "country": "FR", "author_is_minor": False},
    "ObjectionEvent": {"objection_id": "o-1", "user_id": "u-42", "kind": "object", "received_at": "2025-05-27T10:00:01Z", "channel": "web",
                       "reason": "why", "notice_version": "2025-05"},
    "Notice": {"notice_id": "n-1", "user_id": "u-42", "notice_version": "2025-05", "channel": "email", "sent_at": "2025-05-01T09:00:00Z", "country": "FR"},
}
READERS = {
    "Post": lambda obj: parse_post(orjson.dumps(obj), obj["user_id"].encode() if type(obj.get("user_id")) is str else b"u-42"),
    "ObjectionEvent": objection_from_dict,
    "Notice": lambda obj: parse_notice(orjson.dumps(obj)),
}


def mutations(message) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    valid = VALID[message.name]
    out = [("valid", dict(valid)), ("unknown field", {**valid, "extra": {"nested": [1, None]}})]
    for field in message.fields:
        if field.kind == "key":
            continue
        without = {k: v for k, v in valid.items() if k != field.name}
        out.append((f"{field.name} absent", without))
        out.extend((f"{field.name}={value!r}", {**valid, field.name: value}) for value in HOSTILE_VALUES)
    return out


@pytest.mark.parametrize("message", [POST, OBJECTION, NOTICE], ids=["Post", "ObjectionEvent", "Notice"])
def test_the_code_and_the_schema_judge_every_field_alike(message) -> None:  # type: ignore[no-untyped-def]
    schema = validator(message)
    read = READERS[message.name]
    refused = accepted = 0
    for what, obj in mutations(message):
        code = read(obj)
        if type(code) is Invalid and code.code in OUTSIDE_THE_DOCUMENT:
            continue
        errors = [e.message for e in schema.iter_errors(obj)]
        verdicts_agree(code, errors, obj, f"{message.name} {what}")
        refused += bool(errors)
        accepted += not errors
    assert refused > 100 and accepted > 20


def test_ids_the_schema_cannot_judge_are_named_in_its_description() -> None:
    schema = validator(POST)
    for user_id in ("e\u0301", "a\u200bb", "\ufeffbom"):  # not NFC; format characters (Cf)
        post = {**VALID["Post"], "user_id": user_id}
        code = parse_post(orjson.dumps(post), user_id.encode())

        assert type(code) is Invalid and code.code == "not_canonical"
        assert schema.is_valid(post)  # the limit of JSON Schema, said in the description
    assert "NFC" in schema.schema["properties"]["user_id"]["description"]


# ------------------------------------------------------------ what the code writes


def test_what_the_encoders_write_is_valid_against_the_written_messages_schemas() -> None:
    post = parse_post(orjson.dumps(VALID["Post"]), b"u-42")
    assert type(post) is Post
    training = validator(TRAINING_POST)
    for ingested_at in (0, 1_748_340_000_000_000, 1_748_340_000_123_456):
        assert training.is_valid(orjson.loads(encode_training_post(post, ingested_at)))
    assert validator(PURGE_MARKER).is_valid(orjson.loads(encode_purge_marker(PurgeMarker("u-42", ("o-1", "o-2"), 1_748_340_000_500_000))))
    assert not validator(PURGE_MARKER).is_valid({**orjson.loads(encode_purge_marker(PurgeMarker("u-42", ("o-1",), 0))), "objection_ids": []})

    rejections = validator(REJECTION)
    rng = random.Random(3)
    codes = set()
    for case in hostile_posts(rng, 1500, "rej", big=False):
        invalid = parse_post(case.value, case.key)
        if type(invalid) is Invalid:
            codes.add(invalid.code)
            record = orjson.loads(encode_rejection(invalid, "posts", 2, 99, case.value, 1_748_340_000_000_001))
            assert rejections.is_valid(record), record["reason_code"]
    assert len(codes) >= 9
    assert not rejections.is_valid({**record, "reason_code": "unheard_of"})


def test_objections_and_notices_the_code_writes_are_valid() -> None:
    from consentry.wire import encode_notice, encode_objection

    event = ObjectionEvent("o-1", "u-42", "withdraw", 1_748_340_000_000_000, "import", None, "v3")
    notice = Notice("n-1", "u-42", "v1", "in_app", 1_748_340_000_000_000, "IS")

    assert validator(OBJECTION).is_valid(orjson.loads(encode_objection(event)))
    assert validator(NOTICE).is_valid(orjson.loads(encode_notice(notice)))


def test_receipts_and_dead_letters_the_code_writes_are_valid() -> None:
    from consentry.contract import DEAD_LETTER, ENFORCED_RECEIPT, PURGED_RECEIPT
    from consentry.domain.model import ENFORCED, PURGED, Receipt
    from consentry.wire import encode_receipt, parse_objection

    enforced = orjson.loads(encode_receipt(Receipt(ENFORCED, "u-42", ("o-1",), 1_748_340_000_000_000)))
    purged = orjson.loads(encode_receipt(Receipt(PURGED, "u-42", ("o-1", "o-2"), 1_748_340_000_100_000, 3, 1_748_340_000_000_000)))
    assert validator(ENFORCED_RECEIPT).is_valid(enforced) and not validator(ENFORCED_RECEIPT).is_valid(purged)
    assert validator(PURGED_RECEIPT).is_valid(purged) and not validator(PURGED_RECEIPT).is_valid({**purged, "rows_purged": None})
    refused = orjson.dumps({**VALID["ObjectionEvent"], "reason": "a\x00b"})
    invalid = parse_objection(refused)
    assert type(invalid) is Invalid
    assert validator(DEAD_LETTER).is_valid(orjson.loads(encode_rejection(invalid, "objections", 1, 7, refused, 1_748_340_000_000_000)))
