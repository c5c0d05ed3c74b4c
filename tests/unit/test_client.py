"""consentry.client: importable with the standard library alone, and its checks say what the
services' parsers say (the same declarations, consentry.contract)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from consentry.client import InvalidMessage, check_notice, check_objection, check_post, frame, notice_record, post_record
from consentry.domain.model import Invalid
from consentry.wire import objection_from_dict, parse_notice, parse_post, unframe
from tests.support.hostile import hostile_posts
from tests.unit.test_schemas import VALID, mutations
from consentry.contract import NOTICE, OBJECTION, POST

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_imports_and_checks_with_the_standard_library_alone() -> None:
    """In a fresh interpreter without site-packages: no orjson, pydantic, aiokafka, jwt..."""
    script = f"""
import sys
sys.path = [p for p in sys.path if "-packages" not in p]
sys.path.insert(0, {str(ROOT)!r})
from consentry.client import InvalidMessage, check_post, post_record
post = {VALID["Post"]!r}
key, value = post_record(post)
assert key == b"u-42", key
try:
    check_post(dict(post, visibility="everyone"))
except InvalidMessage as refused:
    print(refused.code)
third_party = sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names) - {{"consentry", "__main__"}})
print(third_party)
"""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["bad_value", "[]"]


def code_of(check, message) -> str | None:  # type: ignore[no-untyped-def]
    try:
        check(message)
    except InvalidMessage as refused:
        return refused.code
    return None


@pytest.mark.parametrize(
    ("message", "check", "read"),
    [
        (POST, check_post, lambda obj: parse_post(orjson.dumps(obj), obj["user_id"].encode() if type(obj.get("user_id")) is str else None)),
        (OBJECTION, check_objection, objection_from_dict),
        (NOTICE, check_notice, lambda obj: parse_notice(orjson.dumps(obj))),
    ],
    ids=["post", "objection", "notice"],
)
def test_the_client_refuses_what_the_services_refuse_with_the_same_code(message, check, read) -> None:  # type: ignore[no-untyped-def]
    for what, obj in mutations(message):
        parsed = read(obj)
        expected = parsed.code if type(parsed) is Invalid else None
        if expected == "key_mismatch":  # no user_id to key the record with: the client says so first
            assert code_of(check, obj) is not None
            continue
        assert code_of(check, obj) == expected, what


def test_the_client_judges_the_hostile_posts_as_ingest_does() -> None:
    for case in hostile_posts(random.Random(5), 1500, "client", big=False):
        if case.value is None:
            continue
        try:
            obj = orjson.loads(case.value)
        except orjson.JSONDecodeError:
            continue
        if type(obj) is not dict or type(obj.get("user_id")) is not str:
            continue
        ingest = parse_post(orjson.dumps(obj), obj["user_id"].encode())  # as the client keys it
        assert code_of(check_post, obj) == (ingest.code if type(ingest) is Invalid else None), case.label


def test_records_carry_the_user_id_as_key_and_ingest_reads_them() -> None:
    post = {**VALID["Post"], "user_id": "réné", "text": "héllo ✓"}
    key, value = post_record(post)
    assert key == "réné".encode() and orjson.loads(value) == post
    assert type(parse_post(value, key)) is not Invalid

    framed_key, framed = post_record(post, schema_id=42)
    assert framed == frame(value, 42) and unframe(framed) == value and framed_key == key

    notice_key, notice = notice_record(VALID["Notice"])
    assert notice_key == b"u-42" and type(parse_notice(notice)) is not Invalid


def test_what_json_cannot_carry_is_refused_before_sending() -> None:
    assert code_of(check_post, {**VALID["Post"], "extra": float("nan")}) == "invalid_json"
    assert code_of(check_post, {**VALID["Post"], "extra": object()}) == "invalid_json"
    assert code_of(check_post, {**VALID["Post"], "text": "x" * (1 << 20)}) == "too_large"
