"""The contract's messages, declared once: each field's type, limits and rejection reason.

One table per message drives both sides:
- `Validator(message)` compiles it into the function consentry.wire runs on every `posts`,
  `objections` and `notices` value (the reason codes and sentences of the hand-written checks
  it replaced: the first failing field, in the order declared, decides);
- `json_schema(message)` turns it into the JSON Schema documents published under `schemas/`
  (`consentry schemas` writes them; tests/unit/test_schemas.py fails when they are stale).

The messages Consentry only writes (training posts, purge markers, rejections, dead letters,
receipts) are declared here too, for their schemas; tests/unit/test_schemas.py checks that
what the encoders write is valid against them.

Some rules JSON Schema cannot express; each schema says which in its description and the
validator keeps them: canonical identifiers (Unicode NFC, no format characters: a pattern
can refuse control characters and surrounding whitespace, not those), the calendar (30
February) and the UTC bounds of a timestamp (years 1 to 9999 once its offset is applied),
the 1 MiB size of a post and its record key (the `user_id`).

Standard library only (with consentry.domain and consentry.timeutil): the client library
(consentry.client) checks posts with it where neither orjson nor jsonschema is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consentry.domain.model import (
    MAX_ID_LENGTH,
    MAX_LANG_LENGTH,
    MAX_POST_BYTES,
    MAX_REASON_LENGTH,
    REJECTED_RAW_LIMIT,
    Channel,
    Invalid,
    Kind,
    NoticeChannel,
    Visibility,
    identifier_problem,
    is_country_code,
)
from consentry.timeutil import parse_rfc3339

# Field kinds. The first group is validated (and described); the second only described, for
# the messages Consentry writes itself.
ID = "id"  # a canonical identifier (contract, "Identifiers")
TIMESTAMP = "timestamp"  # RFC 3339 with a time zone
ENUM = "enum"
TEXT = "text"  # a string without NUL, of at most `max_length` characters when given
COUNTRY = "country"  # ISO 3166-1 alpha-2, upper case
BOOLEAN = "boolean"
KEY = "key"  # not a field: the record key must be the user_id (checked where it is declared)
CONST = "const"
UTC_TIMESTAMP = "utc_timestamp"  # as Consentry writes times: UTC, "Z", microseconds only when not zero
ID_LIST = "id_list"  # a non-empty array of identifiers
INTEGER = "integer"  # >= 0
STRING = "string"  # any string

SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"  # what AsyncAPI 3 and Confluent's JSON serializer both read

# The RFC 3339 date-time parse_rfc3339 accepts, with the ranges a pattern can hold (ASCII digits
# only: `\d` is any Unicode digit in Python). `$(?!\n)`: Python's `$` also matches before a
# final newline, ECMA 262's never; with the look-ahead both mean the end of the string.
_TIMESTAMP_PATTERN = (
    r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$(?!\n)"
)
_UTC_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z$(?!\n)"
_CONTROL = r"\u0000-\u001f\u007f-\u009f"  # Unicode category Cc
_ID_PATTERN = rf"^[^\s{_CONTROL}]([^{_CONTROL}]*[^\s{_CONTROL}])?$(?!\n)"
_NO_NUL_PATTERN = r"^[^\u0000]*$"
_COUNTRY_PATTERN = r"^[A-Z]{2}$(?!\n)"

ID_NOTE = (
    "A canonical identifier: 1 to 256 code points, no control character, no leading or trailing "
    "whitespace (the pattern), in Unicode NFC and without format characters (category Cf), which "
    "JSON Schema cannot express: the validator refuses those with reason not_canonical."
)
TIMESTAMP_NOTE = (
    "An RFC 3339 date-time with a time zone (a space may replace the T). JSON Schema cannot express "
    "the calendar (30 February) nor the bounds: the instant, in UTC, must fall in years 1 to 9999; "
    "the validator refuses those with reason bad_timestamp."
)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    required: bool = True
    nullable: bool = False  # an optional field may also be null
    max_length: int | None = None
    values: tuple[str, ...] = ()  # ENUM, CONST
    description: str = ""
    # (code, detail) when a required field is absent or null, and when it has the wrong type;
    # None: the usual "missing_field" / "wrong_type" sentences.
    missing: tuple[str, str] | None = None
    wrong: tuple[str, str] | None = None


@dataclass(frozen=True)
class Message:
    name: str  # as docs/asyncapi.yaml names it
    file: str  # under schemas/
    title: str
    description: str
    fields: tuple[Field, ...]
    unknown_fields: bool  # kept (or ignored) rather than refused
    notes: tuple[str, ...] = ()  # rules the schema cannot express, said in its description


def _enum_detail(name: str, values: tuple[str, ...]) -> str:
    return f"'{name}' must be " + (f"'{values[0]}' or '{values[1]}'" if len(values) == 2 else "one of " + ", ".join(values))


def _enum(name: str, values: tuple[str, ...], *, missing_is_bad: bool = True, description: str = "") -> Field:
    detail = ("bad_value", _enum_detail(name, values))
    return Field(name, ENUM, values=values, description=description, missing=detail if missing_is_bad else None, wrong=detail)


def _timestamp(name: str, *, loose: bool, description: str = "") -> Field:
    """`loose`: absent, null or not a string all read as missing (objections, notices)."""
    detail = ("missing_field", f"'{name}' must be an RFC 3339 string") if loose else None
    return Field(name, TIMESTAMP, description=description, missing=detail, wrong=detail)


VISIBILITY_VALUES = tuple(str(v) for v in Visibility)
KIND_VALUES = tuple(str(k) for k in Kind)
CHANNEL_VALUES = tuple(str(c) for c in Channel)
NOTICE_CHANNEL_VALUES = tuple(str(c) for c in NoticeChannel)

# Every reason code of posts.rejected: the validator's, and those of the bytes around it.
POST_REASON_CODES = (
    "empty", "too_large", "invalid_json", "not_an_object", "bad_framing", "missing_field", "wrong_type", "bad_value",
    "null_byte", "not_canonical", "key_mismatch", "bad_timestamp",
)

POST = Message(
    "Post", "post.json", "A post (topic posts)",
    "The contract's post, written by upstream producers, keyed by its user_id. Unknown fields are kept but not stored.",
    (
        Field("post_id", ID),
        Field("user_id", ID, description="Must equal the record key (UTF-8)."),
        Field("key", KEY),
        _timestamp("created_at", loose=False),
        _enum("visibility", VISIBILITY_VALUES, missing_is_bad=False),
        Field("text", TEXT),
        Field("lang", TEXT, required=False, nullable=True, max_length=MAX_LANG_LENGTH, description="A BCP 47 tag."),
        Field("country", COUNTRY, required=False, nullable=True, description="ISO 3166-1 alpha-2, such as FR."),
        Field("author_is_minor", BOOLEAN, required=False, description="Default false; null or anything but true or false is refused (fail closed)."),
    ),
    unknown_fields=True,
    notes=(
        f"The record key must be the user_id as UTF-8 (reason key_mismatch) and the value at most {MAX_POST_BYTES} bytes (too_large): "
        "neither is part of the JSON document.",
    ),
)

OBJECTION = Message(
    "ObjectionEvent", "objection.json", "An objection event (topic objections)",
    "Written by the gateway and the imports. objection_id is unique: re-delivery of the same id changes nothing. "
    "Imported events carry their original received_at. Readers ignore unknown fields.",
    (
        Field("objection_id", ID),
        Field("user_id", ID, description="Also the record key (UTF-8)."),
        _enum("kind", KIND_VALUES),
        _timestamp("received_at", loose=True),
        _enum("channel", CHANNEL_VALUES),
        Field("reason", TEXT, required=False, nullable=True, max_length=MAX_REASON_LENGTH),
        Field("notice_version", TEXT, required=False, nullable=True, max_length=MAX_ID_LENGTH, description="The notice version the person last saw."),
    ),
    unknown_fields=True,
)

NOTICE = Message(
    "Notice", "notice.json", "A notice (topic notices)",
    "Written by the platform's notification system when it tells a person their public posts may be used for AI "
    "training. notice_id is unique: re-delivery changes nothing. Readers ignore unknown fields.",
    (
        Field("notice_id", ID),
        Field("user_id", ID, description="Also the record key (UTF-8)."),
        Field("notice_version", ID, description="Which text was sent."),
        _enum("channel", NOTICE_CHANNEL_VALUES),
        _timestamp("sent_at", loose=True),
        Field("country", COUNTRY, description="ISO 3166-1 alpha-2, such as FR: where the person lives."),
    ),
    unknown_fields=True,
)

TRAINING_POST = Message(
    "TrainingPost", "training-post.json", "An accepted post (topic training.posts)",
    "Written by ingest for every post accepted for training, in its user's home partition.",
    (
        Field("type", CONST, values=("post",)),
        Field("post_id", ID),
        Field("user_id", ID),
        Field("created_at", UTC_TIMESTAMP),
        Field("text", STRING),
        Field("lang", STRING, nullable=True),
        Field("country", STRING, nullable=True),
        Field("ingested_at", UTC_TIMESTAMP),
    ),
    unknown_fields=False,
)

PURGE_MARKER = Message(
    "PurgeMarker", "purge-marker.json", "A purge marker (topic training.posts)",
    "Written by ingest after every post it forwarded for a user who objected: delete every stored post of user_id.",
    (
        Field("type", CONST, values=("purge",)),
        Field("user_id", ID),
        Field("objection_ids", ID_LIST, description="The objections this purge enforces (echoed in the purged receipt)."),
        Field("marked_at", UTC_TIMESTAMP, description="When ingest wrote the marker (the objection's enforced_at)."),
    ),
    unknown_fields=False,
)

# Where a refused record was read, and its raw value: the tail of a rejection and of a dead letter.
RAW_RECORD_FIELDS = (
    Field("partition", INTEGER),
    Field("offset", INTEGER),
    Field("received_at", UTC_TIMESTAMP),
    Field("value", STRING, max_length=REJECTED_RAW_LIMIT, description="The raw value's first 4 KiB, decoded as UTF-8 with replacement characters."),
    Field("value_bytes", INTEGER, description="Size of the whole raw value."),
    Field("value_truncated", BOOLEAN),
)

REJECTION = Message(
    "Rejection", "rejection.json", "A rejected post (topic posts.rejected)",
    "Written by ingest for every posts value it could not accept, with the reason; never the post's text beyond the raw value.",
    (
        Field("reason", STRING, description="`reason_code: a sentence`; never contains post text."),
        Field("reason_code", ENUM, values=POST_REASON_CODES),
        Field("topic", STRING, description="Where the record was read (posts, or the internal posts-by-user topic)."),
        *RAW_RECORD_FIELDS,
    ),
    unknown_fields=False,
)

DEAD_LETTER = Message(
    "DeadLetter", "dead-letter.json", "An event the consent service could not apply (topic consentry.consent-dead-letters)",
    "Written by the consent service for every objection, notice or receipt its parser refused, with the reason; "
    "re-driven with `consentry dead-letters --write DIR` and an import.",
    (
        Field("reason", STRING, description="`reason_code: a sentence`."),
        Field("reason_code", STRING, description="The short label of the parser's refusal (the metric's `reason`)."),
        Field("topic", STRING, description="Where the event was read (objections, notices or consentry.receipts, with the topic prefix)."),
        *RAW_RECORD_FIELDS,
    ),
    unknown_fields=False,
)

ENFORCED_RECEIPT = Message(
    "EnforcedReceipt", "enforced-receipt.json", "An enforced receipt (topic consentry.receipts)",
    "Written by ingest once it drops a user's posts and wrote their purge marker (or applied a withdrawal).",
    (
        Field("type", CONST, values=("enforced",)),
        Field("user_id", ID),
        Field("objection_ids", ID_LIST),
        Field("at", UTC_TIMESTAMP),
    ),
    unknown_fields=False,
)

PURGED_RECEIPT = Message(
    "PurgedReceipt", "purged-receipt.json", "A purged receipt (topic consentry.receipts)",
    "Written by the training sink once the Delta delete of a purge marker is committed.",
    (
        Field("type", CONST, values=("purged",)),
        Field("user_id", ID),
        Field("objection_ids", ID_LIST),
        Field("at", UTC_TIMESTAMP, description="When the Delta delete was committed."),
        Field("rows_purged", INTEGER, description="Rows this purge deleted (0 when a replay finds them gone already)."),
        Field("enforced_at", UTC_TIMESTAMP, description="The purge marker's marked_at."),
        Field(
            "trained_on_runs", ID_LIST, required=False,
            description="The training runs that read a table version still holding the purged rows (consentry.lineage); absent when none did.",
        ),
        Field(
            "version", INTEGER, required=False,
            description="The Delta version of the delete (the audit trail's proof of the purge); absent when no row was found (a replay) or the commit is not known.",
        ),
    ),
    unknown_fields=False,
)

MESSAGES = (POST, OBJECTION, NOTICE, TRAINING_POST, PURGE_MARKER, REJECTION, DEAD_LETTER, ENFORCED_RECEIPT, PURGED_RECEIPT)


# ------------------------------------------------------------------------- validator
#
# A message's table compiles into one straight-line Python function, as dataclasses compiles
# __init__: ingest runs it on every post (the hot path), where a loop over per-field closures
# cost 40 % more than the hand-written checks it replaced. The source is generated from the
# table only; `Validator.source` shows it.


# The common case, checked in C: a printable ASCII id of the right length without surrounding
# spaces is canonical (anything else takes `_id_problem`).
_PLAIN_ID = "type({v}) is str and 0 < len({v}) <= MAX_ID_LENGTH and {v}.isascii() and {v}.isprintable() and {v}[0] != ' ' and {v}[-1] != ' '"


def _id_problem(name: str, value: Any) -> Invalid:
    """Why `value`, which is not a plain ASCII id, is refused; or `value` when it is canonical."""
    if value is None:
        return Invalid("missing_field", f"required field '{name}' is missing")
    if type(value) is not str:
        return Invalid("wrong_type", f"'{name}' must be a string")
    if not value or len(value) > MAX_ID_LENGTH:
        return Invalid("bad_value", f"'{name}' must be 1 to {MAX_ID_LENGTH} characters")
    if "\x00" in value:
        return Invalid("null_byte", f"'{name}' contains a NUL character")
    problem = identifier_problem(value)
    if problem is not None:
        return Invalid("not_canonical", f"'{name}' {problem}; identifiers are compared exactly and never normalised")
    return value  # type: ignore[return-value]  # canonical, beyond ASCII


def _missing(field: Field) -> Invalid:
    return Invalid(*(field.missing or ("missing_field", f"required field '{field.name}' is missing")))


def _compile(message: Message) -> tuple[str, dict[str, Any]]:
    """(source of `validate(obj, key)`, its globals): the checks of every field, in declared
    order; the first that fails returns its Invalid. It returns the values as a tuple: one per
    field, two for a timestamp (its text, then microseconds), the key for the key pseudo-field."""
    env: dict[str, Any] = {"Invalid": Invalid, "MAX_ID_LENGTH": MAX_ID_LENGTH, "_id_problem": _id_problem,
                           "parse_rfc3339": parse_rfc3339, "is_country_code": is_country_code}
    lines = ["def validate(obj, key=None):", "    get = obj.get"]
    out: list[str] = []

    def const(value: Any) -> str:
        name = f"_c{len(env)}"
        env[name] = value
        return name

    for n, field in enumerate(message.fields):
        v, name, kind = f"v{n}", field.name, field.kind
        if kind == KEY:
            lines += [
                "    if key is None:",
                f"        return {const(Invalid('key_mismatch', 'message has no key; the key must be the user_id'))}",
                f"    if key != v{[f.name for f in message.fields].index('user_id')}.encode():  # declared after user_id: valid by now",
                f"        return {const(Invalid('key_mismatch', 'message key differs from its user_id'))}",
            ]
            out.append("key")
            continue
        lines.append(f"    {v} = get({name!r})")
        if kind == ID:
            lines += [f"    if not ({_PLAIN_ID.format(v=v)}):", f"        {v} = _id_problem({name!r}, {v})", f"        if type({v}) is Invalid:", f"            return {v}"]
        elif kind == TIMESTAMP:
            wrong = Invalid(*(field.wrong or ("wrong_type", f"'{name}' must be a string")))
            bad = Invalid("bad_timestamp", f"'{name}' is not an RFC 3339 date-time with a time zone")
            lines += [
                f"    if {v} is None:", f"        return {const(_missing(field))}",
                f"    if type({v}) is not str:", f"        return {const(wrong)}",
                f"    {v}_us = parse_rfc3339({v})",
                f"    if {v}_us is None:", f"        return {const(bad)}",
            ]
            out.append(f"{v}_us")  # after the text, below
        elif kind == ENUM:
            wrong = Invalid(*(field.wrong or ("bad_value", _enum_detail(name, field.values))))
            lines += [
                f"    if {v} is None:", f"        return {const(_missing(field))}",
                f"    if type({v}) is not str or {v} not in {const(frozenset(field.values))}:  # type first: a list is unhashable",
                f"        return {const(wrong)}",
            ]
        elif kind == TEXT:
            checks = [
                f"    if type({v}) is not str:", f"        return {const(Invalid('wrong_type', f'{name!r} must be a string' if field.required else f'{name!r} must be a string or null'))}",
            ]
            if field.max_length is not None:
                checks += [f"    if len({v}) > {field.max_length}:", f"        return {const(Invalid('bad_value', f'{name!r} is longer than {field.max_length} characters'))}"]
            checks += [f"    if '\\x00' in {v}:", f"        return {const(Invalid('null_byte', f'{name!r} contains a NUL character'))}"]
            if field.required:
                lines += [f"    if {v} is None:", f"        return {const(_missing(field))}", *checks]
            else:
                lines += [f"    if {v} is not None:", *("    " + c for c in checks)]
        elif kind == COUNTRY:
            bad = const(Invalid("bad_value", f"'{name}' must be an ISO 3166-1 alpha-2 code such as FR"))
            if field.required:
                lines += [f"    if {v} is None:", f"        return {const(_missing(field))}"]
                lines += [f"    if not is_country_code({v}):", f"        return {bad}"]
            else:
                lines += [f"    if {v} is not None and not is_country_code({v}):", f"        return {bad}"]
        elif kind == BOOLEAN:
            # Absent: false. Null or "false" is not an answer: when we cannot tell, fail closed.
            lines[-1] = f"    {v} = get({name!r}, False)"
            lines += [f"    if type({v}) is not bool:", f"        return {const(Invalid('wrong_type', f'{name!r} must be true or false'))}"]
        else:
            raise ValueError(f"{message.name} is written by Consentry only: its kind {kind!r} has no validator")
        out.insert(len(out) - (kind == TIMESTAMP), v)
    lines.append(f"    return ({', '.join(out)},)")
    return "\n".join(lines) + "\n", env


class Validator:
    """The compiled checks of one message: `validate(obj, key)` returns the fields' values in
    declared order (a timestamp as its text then its microseconds, the key pseudo-field as the
    key), or the first `Invalid`. `obj` must be a dict (the callers say what else it was)."""

    __slots__ = ("message", "source", "validate")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.source, env = _compile(message)
        exec(compile(self.source, f"<validator of {message.name}>", "exec"), env)  # noqa: S102 (our own table)
        self.validate: Callable[..., tuple[Any, ...] | Invalid] = env["validate"]


# --------------------------------------------------------------------------- schema


def _property(field: Field) -> dict[str, Any]:
    kind = field.kind
    out: dict[str, Any]
    if kind == ID:
        out = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": _ID_PATTERN}
    elif kind == TIMESTAMP:
        out = {"type": "string", "pattern": _TIMESTAMP_PATTERN}
    elif kind == UTC_TIMESTAMP:
        out = {"type": "string", "pattern": _UTC_PATTERN, "description": "RFC 3339 in UTC as Consentry writes it, with microseconds only when not zero."}
    elif kind == ENUM:
        out = {"type": "string", "enum": list(field.values)}
    elif kind == CONST:
        out = {"const": field.values[0]}
    elif kind == TEXT:
        out = {"type": "string", "pattern": _NO_NUL_PATTERN}
    elif kind == STRING:
        out = {"type": "string"}
    elif kind == COUNTRY:
        out = {"type": "string", "pattern": _COUNTRY_PATTERN}
    elif kind == BOOLEAN:
        out = {"type": "boolean"}
        if not field.required:
            out["default"] = False
    elif kind == INTEGER:
        out = {"type": "integer", "minimum": 0}
    elif kind == ID_LIST:
        out = {"type": "array", "minItems": 1, "items": _property(Field("", ID))}
    else:
        raise ValueError(f"no schema for the kind {kind!r}")
    if field.max_length is not None:
        out["maxLength"] = field.max_length
    if field.nullable:
        out["type"] = [out["type"], "null"]
    description = " ".join(d for d in (field.description, out.get("description", ""), _note(kind)) if d)
    if description:
        out = {"description": description, **{k: v for k, v in out.items() if k != "description"}}
    return out


def _note(kind: str) -> str:
    return {ID: ID_NOTE, TIMESTAMP: TIMESTAMP_NOTE}.get(kind, "")


def json_schema(message: Message) -> dict[str, Any]:
    """The JSON Schema (draft-07) document of `message`."""
    fields = [f for f in message.fields if f.kind != KEY]
    kinds = {f.kind for f in fields}
    notes = list(message.notes)
    if ID in kinds:
        notes.append("Identifiers: " + ID_NOTE)
    if TIMESTAMP in kinds:
        notes.append("Timestamps: " + TIMESTAMP_NOTE)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": message.title,
        "description": " ".join([message.description, *notes]) + " Generated from consentry/contract.py by `consentry schemas`: do not edit.",
        "type": "object",
        "required": [f.name for f in fields if f.required],
        "properties": {f.name: _property(f) for f in fields},
        "additionalProperties": message.unknown_fields,
    }


def schema_files() -> dict[str, str]:
    """{file name under schemas/: its text}, as `consentry schemas` writes them."""
    import json

    return {m.file: json.dumps(json_schema(m), indent=2, ensure_ascii=False) + "\n" for m in MESSAGES}
