"""docs/asyncapi.yaml: a valid AsyncAPI 3.0 document that says exactly what the code writes.

The document is checked against the official AsyncAPI 3.0.0 JSON Schema (vendored from the
npm package @asyncapi/specs, see tests/deploy/schemas/README.md); every message the code
produces is checked against its payload schema there, and every example there is read back
by the code's own parsers.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT7

from consentry.domain.consent import apply_notice, apply_objection, apply_receipt
from consentry.domain.model import ENFORCED, PURGED, ConsentState, Invalid, Notice, ObjectionEvent, Post, PurgeMarker, Receipt
from consentry.wire import encode_drop_count, parse_drop_count
from consentry.wire import decode_consent_state, encode_consent_state, encode_notice, encode_objection, encode_purge_marker, encode_receipt, encode_rejection, encode_training_post, parse_notice, parse_objection, parse_post, parse_receipt, parse_training_message
from consentry.domain.lineage import RunRead
from consentry.importer import parse_import_line, parse_notice_line
from consentry.wire import encode_run_read, encode_run_user, parse_run_read
from consentry.settings import CommonSettings
from consentry.timeutil import parse_rfc3339
from consentry.topics import Topics
from services.ingest.deferred import parse_deferred
from tests.support.deploy import ROOT, load_yaml

DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json"
SCHEMA_SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"
DOC_URI = DOCUMENT.as_uri()  # a file URI: the generated schemas are referenced relative to it (../schemas/)
SCHEMAS = ROOT / "schemas"


def ts(text: str) -> int:
    value = parse_rfc3339(text)
    assert value is not None
    return value


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_yaml(DOCUMENT)


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def payload(document: dict[str, Any]):  # type: ignore[no-untyped-def]
    """payload(message_name) -> a validator of that message's payload schema."""
    registry = Registry().with_resource(DOC_URI, DRAFT7.create_resource(document))
    for path in SCHEMAS.glob("*.json"):  # generated from consentry/contract.py (`consentry schemas`)
        registry = registry.with_resource(path.as_uri(), DRAFT7.create_resource(json.loads(path.read_text())))

    def validator(message: str) -> jsonschema.Draft7Validator:
        ref = document["components"]["messages"][message]["payload"]["$ref"]
        return jsonschema.Draft7Validator({"$ref": f"{DOC_URI}{ref}"}, registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)

    return validator


def errors(validator: jsonschema.Draft7Validator, value: bytes | dict[str, Any]) -> list[str]:
    instance = orjson.loads(value) if isinstance(value, bytes) else value
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


# ------------------------------------------------------------------ the document


def test_the_vendored_schema_is_the_official_asyncapi_3_0_0_schema() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text())["properties"]["asyncapi"]["const"] == "3.0.0"


def test_the_document_is_valid_asyncapi_3(document, asyncapi_validator) -> None:  # type: ignore[no-untyped-def]
    assert errors(asyncapi_validator, document) == []


def test_the_asyncapi_check_catches_a_version_2_operation(document, asyncapi_validator) -> None:  # type: ignore[no-untyped-def]
    broken = copy.deepcopy(document)
    broken["operations"]["ingestReadsPosts"]["action"] = "subscribe"

    assert errors(asyncapi_validator, broken) != []


def test_every_reference_resolves(document) -> None:  # type: ignore[no-untyped-def]
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        if not ref.startswith("#"):  # a generated schema under schemas/
            assert (DOCUMENT.parent / ref).resolve().parent == SCHEMAS and (DOCUMENT.parent / ref).is_file(), f"{ref} does not resolve"
            continue
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"{ref} does not resolve"
            target = target[part]


def test_every_topic_the_system_creates_is_documented_with_its_configuration(document) -> None:  # type: ignore[no-untyped-def]
    channels = {c["address"]: c for c in document["channels"].values()}
    default_partitions = CommonSettings.model_fields["partitions"].default

    assert set(channels) == {spec.name for spec in Topics().specs()}
    for spec in Topics().specs():
        binding = channels[spec.name]["bindings"]["kafka"]
        expected = {k: [v] if k == "cleanup.policy" else int(v) for k, v in spec.config.items()}
        assert binding["topicConfiguration"] == expected, spec.name
        assert binding.get("partitions") == (default_partitions if spec.user_keyed else None), spec.name


# ------------------------------------------------------------------ what the code writes

CONTRACT_POST = {
    "post_id": "p-1", "user_id": "u-42", "created_at": "2025-05-27T10:00:00Z", "visibility": "public",
    "text": "Bonjour !", "lang": "fr", "country": "FR", "author_is_minor": False,
}
OBJECTION = ObjectionEvent("0b9e6c0e-7f1f-4c1e-9a55-5c3f0e3e9d11", "u-42", "object", ts("2025-05-27T10:00:01Z"), "web", "optional text")
WITHDRAWAL = ObjectionEvent("5f0c2d7a-1b8e-4f9a-8c3d-2e6b7a9d0f14", "u-42", "withdraw", ts("2025-06-01T08:30:00Z"), "api")
NOTICE = Notice("n-1", "u-42", "2025-05", "email", ts("2025-05-01T09:00:00Z"), "FR")


def a_post(**changes: Any) -> Post:
    post = parse_post(orjson.dumps({**CONTRACT_POST, **changes}), b"u-42")
    assert type(post) is Post
    return post


def consent_states() -> dict[str, ConsentState]:
    received = apply_objection(None, OBJECTION, ts("2025-05-27T10:00:01.250000Z"))
    enforced = apply_receipt(received, Receipt(ENFORCED, "u-42", (OBJECTION.objection_id,), ts("2025-05-27T10:00:01.900000Z")), ts("2025-05-27T10:00:02Z"))
    purged = apply_receipt(
        enforced, Receipt(PURGED, "u-42", (OBJECTION.objection_id,), ts("2025-05-27T10:00:03.1Z"), 12, ts("2025-05-27T10:00:01.9Z")), ts("2025-05-27T10:00:03.2Z")
    )
    withdrawn = apply_objection(purged, WITHDRAWAL, ts("2025-06-01T08:30:00.5Z"))
    notified = apply_notice(None, NOTICE, ts("2025-05-01T09:00:01Z"))
    notified_then_objected = apply_objection(notified, OBJECTION, ts("2025-05-27T10:00:01.250000Z"))
    assert enforced is not None and purged is not None
    assert notified_then_objected.history[0].notice_version_derived
    folded = withdrawn
    for n in range(100):  # more events than a row keeps in full: the older ones are folded
        event = ObjectionEvent(f"o-{n}", "u-42", "object" if n % 2 == 0 else "withdraw", ts("2025-07-01T00:00:00Z") + n * 1_000_000, "api", "why")
        folded = apply_objection(folded, event, event.received_at_us)
    assert folded.folded is not None and folded.folded.awaiting
    read_by_runs = apply_receipt(
        enforced, Receipt(PURGED, "u-42", (OBJECTION.objection_id,), ts("2025-05-27T10:00:03.1Z"), 12, None, ("run-1", "run-2")), ts("2025-05-27T10:00:03.2Z")
    )
    assert read_by_runs is not None and read_by_runs.trained_on_by == 2
    return {
        "received": received, "enforced": enforced, "purged": purged, "withdrawn": withdrawn,
        "notified": notified, "notified then objected": notified_then_objected, "folded": folded,
        "purged after training runs read the posts": read_by_runs,
    }


# (raw value, key) of invalid posts -> the reason code parse_post gives them
INVALID_POSTS = {
    "empty": (None, b"u-42"),
    "too_large": (b"x" * ((1 << 20) + 1), b"u-42"),
    "invalid_json": (b'{"post_id": "broken", ', b"u-42"),
    "not_an_object": (b"[1, 2]", b"u-42"),
    "missing_field": (orjson.dumps({k: v for k, v in CONTRACT_POST.items() if k != "text"}), b"u-42"),
    "wrong_type": (orjson.dumps({**CONTRACT_POST, "author_is_minor": None}), b"u-42"),
    "bad_value": (orjson.dumps({**CONTRACT_POST, "visibility": "everyone"}), b"u-42"),
    "null_byte": (orjson.dumps({**CONTRACT_POST, "text": "a\x00b"}), b"u-42"),
    "key_mismatch": (orjson.dumps(CONTRACT_POST), b"u-7"),
    "bad_timestamp": (orjson.dumps({**CONTRACT_POST, "created_at": "yesterday at noon"}), b"u-42"),
}


def written_messages() -> list[tuple[str, str, bytes]]:
    """(what, message name in the document, bytes the code writes)."""
    now = ts("2025-05-27T10:00:00.512Z")
    out = [
        ("accepted post", "TrainingPost", encode_training_post(a_post(), now)),
        ("accepted post without lang or country", "TrainingPost", encode_training_post(a_post(lang=None, country=None), ts("2025-05-27T10:00:00Z"))),
        ("purge marker", "PurgeMarker", encode_purge_marker(PurgeMarker("u-42", (OBJECTION.objection_id, WITHDRAWAL.objection_id), now))),
        ("objection", "ObjectionEvent", encode_objection(OBJECTION)),
        ("withdrawal", "ObjectionEvent", encode_objection(WITHDRAWAL)),
        ("enforced receipt", "EnforcedReceipt", encode_receipt(Receipt(ENFORCED, "u-42", (OBJECTION.objection_id,), now))),
        ("purged receipt", "PurgedReceipt", encode_receipt(Receipt(PURGED, "u-42", (OBJECTION.objection_id,), now, 0, now))),
        ("purged receipt naming training runs", "PurgedReceipt", encode_receipt(Receipt(PURGED, "u-42", (OBJECTION.objection_id,), now, 3, now, ("run-1", "run-2")))),
        ("lineage record", "RunRead", encode_run_read(RunRead("run-1", 118, now - 2_000_000, now, 1250, "/var/training"))),
        ("run user", "RunUser", encode_run_user("run-1", "u-42", (OBJECTION.objection_id,), now, 121)),
    ]
    imported = parse_import_line(b'{"objection_id": "imp-1", "user_id": "u-9", "kind": "object", "received_at": "2019-03-01T12:00:00+01:00", "channel": "import", "notice_version": "v3"}', now)
    assert type(imported) is ObjectionEvent
    out.append(("imported objection", "ObjectionEvent", encode_objection(imported)))
    out.append(("notice", "Notice", encode_notice(NOTICE)))
    imported_notice = parse_notice_line(b'{"notice_id": "n-9", "user_id": "u-9", "notice_version": "v1", "channel": "in_app", "sent_at": "2024-01-02T03:04:05+01:00", "country": "IS"}', now)
    assert type(imported_notice) is Notice
    out.append(("imported notice", "Notice", encode_notice(imported_notice)))
    out.append(("deferred post", "DeferredPost", orjson.dumps(CONTRACT_POST)))  # ingest writes the post's own bytes
    for step, state in consent_states().items():
        out.append((f"consent state, {step}", "ConsentState", encode_consent_state(state)))
    for code, (raw, key) in INVALID_POSTS.items():
        invalid = parse_post(raw, key)
        assert type(invalid) is Invalid and invalid.code == code
        out.append((f"rejection: {code}", "Rejection", encode_rejection(invalid, "posts", 3, 1234, raw, now)))
    # What the consent service writes to its dead-letter topic (services/consent/agents.py).
    refused = orjson.dumps({**orjson.loads(encode_objection(OBJECTION)), "reason": "a\x00b"})
    invalid = parse_objection(refused)
    assert type(invalid) is Invalid and invalid.code == "null_byte"
    out.append(("dead letter: objection", "DeadLetter", encode_rejection(invalid, "objections", 3, 1234, refused, now)))
    invalid = parse_receipt(b"[]")
    assert type(invalid) is Invalid
    out.append(("dead letter: receipt", "DeadLetter", encode_rejection(invalid, "consentry.receipts", 0, 7, b"[]", now)))
    out.append(("drop count", "DropCount", encode_drop_count("u-42", "2025-05-27", "objected", 12, now)))
    out += audit_records()
    return out + admin_action_records()


def audit_records() -> list[tuple[str, str, bytes]]:
    """What the audit writer (services/audit) chains from the records the code writes."""
    from consentry.domain.audit import ChainHead
    from services.audit import facts

    head = ChainHead()
    sources = [
        ("received", facts.received(encode_objection(OBJECTION), 3, 1207)),
        ("enforced", facts.receipt(encode_receipt(Receipt(ENFORCED, "u-42", (OBJECTION.objection_id,), ts("2025-05-27T10:00:02Z"))), 3, 530)),
        ("purged", facts.receipt(encode_receipt(Receipt(PURGED, "u-42", (OBJECTION.objection_id,), ts("2025-05-27T10:00:04Z"), 17)), 3, 531)),
        ("dropped", facts.dropped(encode_drop_count("u-42", "2025-05-27", "objected", 12, ts("2025-05-27T10:00:10Z")))),
        ("admin", facts.admin_action(admin_action_records()[1][2])),
    ]
    out = []
    for what, fact in sources:
        assert fact is not None, what
        out.append((f"audit record: {what}", "AuditRecord", head.link({**fact, "cursor": {"objections:3": 1208}})[1]))
    return out


def admin_action_records() -> list[tuple[str, str, bytes]]:
    """The gateway's records on consentry.admin-actions, as services.gateway.api.admin writes them."""
    from types import SimpleNamespace

    from consentry.importer import ImportReport
    from services.gateway.api.admin import AdminAction, WithdrawalScreen, _counts
    from services.gateway.auth import ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE, Principal

    admin = Principal("ops-1", frozenset({ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE}))
    request = SimpleNamespace(client=SimpleNamespace(host="203.0.113.7"))
    action = AdminAction("import_objections", admin, request, None, {"override_live_objections": True})  # type: ignore[arg-type]
    screen = WithdrawalScreen(admin, True, None, None, 0)  # type: ignore[arg-type]
    screen.accepted, screen.overridden = 1, 1
    screen.overrides.append({"objection_id": "legacy-w-1", "user_id": "u-42", "reason": "it would end the objection ..."})
    report = ImportReport(accepted=2, rejected_count=1, lines=3)
    notices = AdminAction("import_notices", admin, SimpleNamespace(client=None), None, {})  # type: ignore[arg-type]
    return [
        ("admin action started", "AdminAction", action.record("started")),
        ("admin action completed", "AdminAction", action.record("completed", counts=_counts(report, screen), overrides=screen.overrides)),
        ("admin action stopped", "AdminAction", action.record("stopped", detail="the broker did not acknowledge", overrides=[])),
        ("notices import completed", "AdminAction", notices.record("completed", counts=_counts(report, None))),
    ]


@pytest.mark.parametrize(("what", "message", "value"), written_messages(), ids=[w for w, _m, _v in written_messages()])
def test_what_the_code_writes_matches_the_documented_payload(payload, what: str, message: str, value: bytes) -> None:  # type: ignore[no-untyped-def]
    assert errors(payload(message), value) == []


def test_the_contract_post_is_a_documented_post(payload) -> None:  # type: ignore[no-untyped-def]
    assert errors(payload("Post"), CONTRACT_POST) == []


@pytest.mark.parametrize("code", ["missing_field", "wrong_type", "bad_value", "null_byte", "bad_timestamp"])
def test_posts_the_code_rejects_are_outside_the_documented_schema(payload, code: str) -> None:  # type: ignore[no-untyped-def]
    raw, _key = INVALID_POSTS[code]
    assert errors(payload("Post"), raw) != []


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("accepted post", {"author_is_minor": False}),  # a field the store does not have
        ("accepted post", {"ingested_at": "2025-05-27 10:00:00"}),  # not how the code writes times
        ("purge marker", {"objection_ids": []}),
        ("purged receipt", {"rows_purged": None}),
        ("purged receipt naming training runs", {"trained_on_runs": []}),
        ("lineage record", {"version": "118"}),
        ("consent state, purged", {"pending": None}),
        ("rejection: invalid_json", {"reason_code": "unheard_of"}),
    ],
)
def test_the_payload_schemas_catch_drift_in_what_the_code_writes(payload, what: str, change: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    message, value = next((m, v) for w, m, v in written_messages() if w == what)
    drifted = {**orjson.loads(value), **change}

    assert errors(payload(message), value) == []
    assert errors(payload(message), drifted) != []


# ------------------------------------------------------------------ what the code reads

READERS = {
    "Post": lambda value, key: type(parse_post(value, key)) is Post,
    "ObjectionEvent": lambda value, _key: type(parse_objection(value)) is ObjectionEvent,
    "TrainingPost": lambda value, _key: type(parse_training_message(value)) is dict,
    "PurgeMarker": lambda value, _key: type(parse_training_message(value)) is PurgeMarker,
    "EnforcedReceipt": lambda value, _key: type(parse_receipt(value)) is Receipt,
    "PurgedReceipt": lambda value, _key: type(parse_receipt(value)) is Receipt,
    "ConsentState": lambda value, _key: type(decode_consent_state(value)) is ConsentState,
    "Notice": lambda value, _key: type(parse_notice(value)) is Notice,
    "DeferredPost": lambda value, _key: type(parse_deferred(value)) is Post,
    "DropCount": lambda value, _key: type(parse_drop_count(value)) is tuple,
    "RunRead": lambda value, _key: type(parse_run_read(value)) is RunRead,
}


def documented_examples() -> list[tuple[str, str, dict[str, Any]]]:
    document = load_yaml(DOCUMENT)
    return [
        (name, example["name"], example["payload"])
        for name, message in document["components"]["messages"].items()
        for example in message.get("examples", [])
    ]


@pytest.mark.parametrize(("message", "title", "example"), documented_examples(), ids=[f"{m}: {t}" for m, t, _e in documented_examples()])
def test_every_example_matches_its_schema_and_is_read_by_the_code(payload, message: str, title: str, example: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    assert errors(payload(message), example) == []
    reader = READERS.get(message)
    if reader is not None:
        value = orjson.dumps(example)
        assert reader(value, example.get("user_id", "").encode()), f"the code does not read the {message} example '{title}'"


def test_every_message_is_exemplified(document) -> None:  # type: ignore[no-untyped-def]
    assert all(message.get("examples") for message in document["components"]["messages"].values())
