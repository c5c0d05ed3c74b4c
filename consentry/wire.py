"""The wire: parsing and encoding of every message Consentry reads or writes.

Contract topics (see ../shared/CONTRACT.md): `posts`, `objections`, `training.posts`,
`posts.rejected`, `notices`. Internal topics: the consent state changelog, the enforcement
receipts and the deferred posts (a post's own bytes, keyed by post_id). Each message is one
JSON object; keys are the user_id as UTF-8. The types are the domain's
(consentry.domain.model); this module only turns them into bytes and back.

Parsing never raises on bad input: it returns `Invalid(code, detail)`, where `code` is a
short, stable label (used in metrics) and `detail` a sentence for people. Neither ever
contains post text. Every writer (the gateway, the imports) and every reader (the consent
service, ingest) validates with these same functions: what one accepts, the other applies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from consentry.domain.model import (
    ENFORCED,
    MAX_ID_LENGTH,
    MAX_LANG_LENGTH,
    MAX_POST_BYTES,
    NO_NOTICES,
    OBJECT,
    PURGED,
    REJECTED_RAW_LIMIT,
    AwaitingObjection,
    ConsentState,
    EnforcementView,
    Folded,
    HistoryEntry,
    Invalid,
    Notice,
    NoticeEntry,
    ObjectionEvent,
    Post,
    PurgeMarker,
    Receipt,
    UserStatus,
    notice_facts,
)
from consentry.contract import NOTICE, OBJECTION, POST, Validator
from consentry.domain.lineage import RunRead
from consentry.timeutil import format_rfc3339, parse_rfc3339

# The checks of the contract's messages, compiled from their one declaration (consentry.contract),
# which also generates the JSON Schemas under schemas/.
_POST, _OBJECTION, _NOTICE = Validator(POST), Validator(OBJECTION), Validator(NOTICE)

# --------------------------------------------------------------------------- posts


def _is_canonical_utc(text: str) -> bool:
    """True when `text` (a valid RFC 3339 date-time) is exactly what format_rfc3339 writes: being
    valid, with a "Z" and 20 or 27 characters, it can only be `…:SSZ` or `…:SS.ffffffZ`."""
    n = len(text)
    return text[-1] == "Z" and text[10] == "T" and (n == 20 or (n == 27 and text[20:26] != "000000"))


def parse_post(value: bytes | None, key: bytes | None) -> Post | Invalid:
    """Validate one `posts` message against the contract."""
    if value is None:
        return Invalid("empty", "message has no value")
    if len(value) > MAX_POST_BYTES:
        return Invalid("too_large", f"value is {len(value)} bytes, over the 1 MiB limit")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if value[:1] == MAGIC_BYTE and len(value) >= FRAME_HEADER_BYTES:
            return Invalid(
                "bad_framing",
                f"value starts with a Schema Registry header (schema id {int.from_bytes(value[1:5], 'big')}), but plain JSON is expected: "
                "set CONSENTRY_POSTS_FRAMING=schema-registry",
            )
        return Invalid("invalid_json", f"value is not valid UTF-8 JSON ({exc.msg})")
    if type(obj) is not dict:
        return Invalid("not_an_object", f"value is a JSON {type(obj).__name__}, not an object")

    values = _POST.validate(obj, key)
    if type(values) is Invalid:
        return values
    post_id, user_id, _key, created_at, created_at_us, visibility, text, lang, country, minor = values
    return Post(post_id, user_id, created_at_us, visibility, text, lang, country, minor, created_at if _is_canonical_utc(created_at) else None)



# The common shape of a post, for ingest's hot path: what `parse_post` accepts, decided with
# fewer checks and no Post built. It answers only when every check of the generic validator
# passes with the plain forms (ASCII ids, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` as format_rfc3339
# writes it); anything else is None and goes to `parse_post`, so every rejection is the
# generic validator's own. tests/unit/test_post_fast_path.py proves the two equal (hypothesis,
# arbitrary and mutated posts) and fails when the POST declaration changes without this.
_POST_FIELDS = ("post_id", "user_id", "key", "created_at", "visibility", "text", "lang", "country", "author_is_minor")
_VISIBILITIES = frozenset(next(f for f in POST.fields if f.name == "visibility").values)
_fromisoformat = datetime.fromisoformat
_JSONDecodeError = orjson.JSONDecodeError
_loads = orjson.loads


def parse_common_post(value: bytes | None, key: bytes | None) -> tuple[str, str, str, str, str, str | None, str | None, bool] | None:
    """(post_id, user_id, created_at, visibility, text, lang, country, author_is_minor) of a
    post in the common shape, exactly as `parse_post` reads it, its `created_at` canonical
    (`parse_rfc3339(created_at)` is its created_at_us); None: ask `parse_post`."""
    if value is None or len(value) > MAX_POST_BYTES:
        return None
    try:
        obj = _loads(value)
    except _JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    get = obj.get
    post_id, user_id, created_at, visibility, text = get("post_id"), get("user_id"), get("created_at"), get("visibility"), get("text")
    lang, country, minor = get("lang"), get("country"), get("author_is_minor", False)
    if not (
        type(post_id) is str and type(user_id) is str and type(created_at) is str and type(visibility) is str and type(text) is str
        and 0 < len(post_id) <= MAX_ID_LENGTH and 0 < len(user_id) <= MAX_ID_LENGTH
        and post_id.isascii() and post_id.isprintable() and post_id[0] != " " and post_id[-1] != " "
        and user_id.isascii() and user_id.isprintable() and user_id[0] != " " and user_id[-1] != " "
        and key is not None and key == user_id.encode()
        and visibility in _VISIBILITIES and "\x00" not in text
        and (lang is None or (type(lang) is str and len(lang) <= MAX_LANG_LENGTH and "\x00" not in lang))
        and (country is None or (type(country) is str and len(country) == 2 and country.isascii() and country.isalpha() and country.isupper()))
        and (minor is False or minor is True)
    ):
        return None
    # The canonical forms parse_rfc3339's fast path takes, where datetime's C parser decides
    # alone (the calendar): `…:SSZ`, or `…:SS.ffffffZ` with microseconds not all zero.
    n = len(created_at)
    if not (
        (n == 20 or (n == 27 and created_at[19] == "." and created_at[20:26] != "000000"))
        and created_at[-1] == "Z" and created_at[10] == "T" and created_at[4] == "-" and created_at[7] == "-"
        and created_at[13] == ":" and created_at[16] == ":" and created_at.isascii()
    ):
        return None
    try:
        _fromisoformat(created_at)
    except ValueError:
        return None
    return post_id, user_id, created_at, visibility, text, lang, country, minor


# The framing of a Confluent-compatible Schema Registry serializer: magic byte 0, the schema id
# (4 bytes, big-endian), then the document (JSON for the JSON Schema serializer).
MAGIC_BYTE = b"\x00"
FRAME_HEADER_BYTES = 5
PLAIN = "json"
SCHEMA_REGISTRY = "schema-registry"
FRAMINGS = (PLAIN, SCHEMA_REGISTRY)


def unframe(value: bytes | None) -> bytes | None | Invalid:
    """The JSON inside a value framed by a Schema Registry JSON serializer, or why the value is
    not framed so (`bad_framing`). No value stays no value (parse_post says `empty`). The schema
    id is not checked: Consentry reads the JSON, whatever schema version the producer registered."""
    if value is None:
        return None
    if len(value) < FRAME_HEADER_BYTES or value[:1] != MAGIC_BYTE:
        what = "plain JSON" if value[:1] in (b"{", b"[", b" ", b"\n") else f"{len(value)} bytes starting with 0x{value[:1].hex() or '(none)'}"
        return Invalid(
            "bad_framing",
            f"value is {what}, not framed by a Schema Registry serializer (magic byte 0, a 4-byte schema id, then JSON), "
            "as CONSENTRY_POSTS_FRAMING=schema-registry requires",
        )
    return value[FRAME_HEADER_BYTES:]


def frame(value: bytes, schema_id: int) -> bytes:
    """`value` framed as a Schema Registry JSON serializer frames it (for producers and tests)."""
    return MAGIC_BYTE + schema_id.to_bytes(4, "big") + value


# ------------------------------------------------------------------ posts.rejected


def encode_rejection(invalid: Invalid, topic: str, partition: int, offset: int, raw: bytes | None, received_at_us: int) -> bytes:
    raw = raw or b""
    return orjson.dumps(
        {
            "reason": invalid.reason,
            "reason_code": invalid.code,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "received_at": format_rfc3339(received_at_us),
            "value": raw[:REJECTED_RAW_LIMIT].decode("utf-8", errors="replace"),
            "value_bytes": len(raw),
            "value_truncated": len(raw) > REJECTED_RAW_LIMIT,
        }
    )


# ---------------------------------------------------------------- training.posts


_last_ingested_at: tuple[int, str] = (0, format_rfc3339(0))  # ingest stamps a batch with one time: format it once


def encode_training_post(post: Post, ingested_at_us: int) -> bytes:
    return encode_training_values(
        post.post_id, post.user_id, post.created_at_text or format_rfc3339(post.created_at_us), post.text, post.lang, post.country, ingested_at_us
    )


def encode_training_values(
    post_id: str, user_id: str, created_at: str, text: str, lang: str | None, country: str | None, ingested_at_us: int
) -> bytes:
    """An accepted post from its values (`created_at` as format_rfc3339 writes it): ingest's hot
    path, which builds no Post."""
    global _last_ingested_at
    last = _last_ingested_at
    if last[0] != ingested_at_us:
        last = _last_ingested_at = (ingested_at_us, format_rfc3339(ingested_at_us))
    return orjson.dumps(
        {
            "type": "post",
            "post_id": post_id,
            "user_id": user_id,
            "created_at": created_at,
            "text": text,
            "lang": lang,
            "country": country,
            "ingested_at": last[1],
        }
    )


def encode_purge_marker(marker: PurgeMarker) -> bytes:
    return orjson.dumps(
        {
            "type": "purge",
            "user_id": marker.user_id,
            "objection_ids": list(marker.objection_ids),
            "marked_at": format_rfc3339(marker.marked_at_us),
        }
    )


def parse_training_message(value: bytes) -> dict[str, Any] | PurgeMarker | Invalid:
    """An accepted post (as a dict with the store's columns, timestamps as strings) or a purge marker."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"training message is not JSON ({exc.msg})")
    if type(obj) is not dict:
        return Invalid("not_an_object", "training message is not an object")
    kind = obj.get("type")
    if kind == "post":
        for name in ("post_id", "user_id", "created_at", "text", "ingested_at"):
            if type(obj.get(name)) is not str:
                return Invalid("missing_field", f"training post lacks '{name}'")
        # Checked here, not left to the store: one bad record must not stop the sink.
        for name in ("created_at", "ingested_at"):
            if parse_rfc3339(obj[name]) is None:
                return Invalid("bad_timestamp", f"training post has a bad '{name}'")
        for name in ("lang", "country"):
            if obj.get(name) is not None and type(obj[name]) is not str:
                return Invalid("wrong_type", f"training post has a non-string '{name}'")
        return obj
    if kind == "purge":
        user_id = obj.get("user_id")
        marked_at = parse_rfc3339(obj.get("marked_at"))
        ids = obj.get("objection_ids") or []
        if type(user_id) is not str or marked_at is None or type(ids) is not list or not all(type(i) is str for i in ids):
            return Invalid("bad_value", "malformed purge marker")
        return PurgeMarker(user_id, tuple(ids), marked_at)
    return Invalid("bad_value", "training message type must be 'post' or 'purge'")


# -------------------------------------------------------------------- objections


def objection_from_dict(obj: Any) -> ObjectionEvent | Invalid:
    if type(obj) is not dict:
        return Invalid("not_an_object", "objection event is not a JSON object")
    values = _OBJECTION.validate(obj)
    if type(values) is Invalid:
        return values
    objection_id, user_id, kind, _received_at, received_at_us, channel, reason, notice_version = values
    return ObjectionEvent(objection_id, user_id, kind, received_at_us, channel, reason, notice_version)


def parse_objection(value: bytes | None) -> ObjectionEvent | Invalid:
    if value is None:
        return Invalid("empty", "message has no value")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"objection is not valid JSON ({exc.msg})")
    return objection_from_dict(obj)


def objection_to_dict(event: ObjectionEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "objection_id": event.objection_id,
        "user_id": event.user_id,
        "kind": str(event.kind),  # a plain str, as parsed JSON has: the validator checks types exactly
        "received_at": format_rfc3339(event.received_at_us),
        "channel": str(event.channel),
    }
    if event.reason is not None:
        out["reason"] = event.reason
    if event.notice_version is not None:
        out["notice_version"] = event.notice_version
    return out


def encode_objection(event: ObjectionEvent) -> bytes:
    return orjson.dumps(objection_to_dict(event))


def check_objection(event: ObjectionEvent) -> Invalid | None:
    """What the consent service will say of `event`: every writer asks before acknowledging
    it, so that what is acknowledged is what the consumer's parser accepts."""
    parsed = objection_from_dict(objection_to_dict(event))
    return parsed if type(parsed) is Invalid else None


# ----------------------------------------------------------------------- notices


def notice_from_dict(obj: Any) -> Notice | Invalid:
    if type(obj) is not dict:
        return Invalid("not_an_object", "notice is not a JSON object")
    values = _NOTICE.validate(obj)
    if type(values) is Invalid:
        return values
    notice_id, user_id, version, channel, _sent_at, sent_at_us, country = values
    return Notice(notice_id, user_id, version, channel, sent_at_us, country)


def parse_notice(value: bytes | None) -> Notice | Invalid:
    """Validate one `notices` message against the contract."""
    if value is None:
        return Invalid("empty", "message has no value")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"notice is not valid JSON ({exc.msg})")
    return notice_from_dict(obj)


def notice_to_dict(notice: Notice) -> dict[str, Any]:
    return {
        "notice_id": notice.notice_id,
        "user_id": notice.user_id,
        "notice_version": notice.notice_version,
        "channel": str(notice.channel),
        "sent_at": format_rfc3339(notice.sent_at_us),
        "country": notice.country,
    }


def encode_notice(notice: Notice) -> bytes:
    return orjson.dumps(notice_to_dict(notice))


def check_notice(notice: Notice) -> Invalid | None:
    """As `check_objection`, for a notice."""
    parsed = notice_from_dict(notice_to_dict(notice))
    return parsed if type(parsed) is Invalid else None


# ---------------------------------------------------------------------- receipts

def encode_receipt(receipt: Receipt) -> bytes:
    out: dict[str, Any] = {
        "type": receipt.kind,
        "user_id": receipt.user_id,
        "objection_ids": list(receipt.objection_ids),
        "at": format_rfc3339(receipt.at_us),
    }
    if receipt.rows_purged is not None:
        out["rows_purged"] = receipt.rows_purged
    if receipt.enforced_at_us is not None:
        out["enforced_at"] = format_rfc3339(receipt.enforced_at_us)
    if receipt.trained_on_runs:  # absent: no run read the purged rows (or not known)
        out["trained_on_runs"] = list(receipt.trained_on_runs)
    if receipt.version is not None:
        out["version"] = receipt.version
    return orjson.dumps(out)


def parse_receipt(value: bytes | None) -> Receipt | Invalid:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"receipt is not JSON ({exc.msg})")
    if type(obj) is not dict or obj.get("type") not in (ENFORCED, PURGED):
        return Invalid("bad_value", "receipt type must be 'enforced' or 'purged'")
    user_id = obj.get("user_id")
    ids = obj.get("objection_ids")
    at_us = parse_rfc3339(obj.get("at"))
    if type(user_id) is not str or type(ids) is not list or not all(type(i) is str for i in ids) or at_us is None:
        return Invalid("bad_value", "malformed receipt")
    rows = obj.get("rows_purged")
    enforced_at = obj.get("enforced_at")
    runs = obj.get("trained_on_runs")
    if runs is not None and (type(runs) is not list or not all(type(r) is str for r in runs)):
        return Invalid("bad_value", "malformed receipt")
    version = obj.get("version")
    if version is not None and (type(version) is not int or version < 0):
        return Invalid("bad_value", "malformed receipt")
    return Receipt(
        obj["type"],
        user_id,
        tuple(ids),
        at_us,
        rows if type(rows) is int else None,
        parse_rfc3339(enforced_at),
        tuple(runs) if runs is not None else None,
        version,
    )


# ------------------------------------------------------- consent state (changelog)


def _ts(us: int | None) -> str | None:
    return None if us is None else format_rfc3339(us)


def history_entry_to_dict(entry: HistoryEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "objection_id": entry.objection_id,
        "kind": entry.kind,
        "channel": entry.channel,
        "received_at": format_rfc3339(entry.received_at_us),
    }
    if entry.reason is not None:
        out["reason"] = entry.reason
    if entry.notice_version is not None:
        out["notice_version"] = entry.notice_version
        if entry.notice_version_derived:
            out["notice_version_derived"] = True
    out["enforced_at"] = _ts(entry.enforced_at_us)  # a withdrawal: when ingest applied it
    if entry.kind == OBJECT:
        out["purged_at"] = _ts(entry.purged_at_us)
        out["rows_purged"] = entry.rows_purged
    return out


def notice_entry_to_dict(entry: NoticeEntry) -> dict[str, Any]:
    return {
        "notice_id": entry.notice_id,
        "notice_version": entry.notice_version,
        "channel": entry.channel,
        "sent_at": format_rfc3339(entry.sent_at_us),
        "country": entry.country,
    }


def folded_to_dict(folded: Folded) -> dict[str, Any]:
    return {
        "events": folded.events,
        "until": format_rfc3339(folded.until_us),
        "until_id": folded.until_id,
        "intervals": [list(i) for i in folded.intervals],
        "open_since": folded.open_since_us,
        "merged": folded.merged,
        "ids": list(folded.ids),
        "latest_live": _ts(folded.latest_live_us),
        # "purged_at": null marks a row that still owes a purge (services/consent/backlog.py).
        "awaiting": [
            {"objection_id": a.objection_id, "since": format_rfc3339(a.since_us), "enforced_at": _ts(a.enforced_at_us), "purged_at": None}
            for a in folded.awaiting
        ],
    }


def folded_from_dict(obj: dict[str, Any]) -> Folded:
    return Folded(
        events=obj["events"],
        until_us=_us(obj["until"]) or 0,
        until_id=obj["until_id"],
        intervals=tuple((i[0], i[1]) for i in obj["intervals"]),
        open_since_us=obj.get("open_since"),
        merged=obj.get("merged", 0),
        ids=tuple(obj["ids"]),
        latest_live_us=_us(obj.get("latest_live")),
        awaiting=tuple(AwaitingObjection(a["objection_id"], _us(a["since"]) or 0, _us(a.get("enforced_at"))) for a in obj.get("awaiting", ())),
    )


def encode_consent_state(state: ConsentState) -> bytes:
    out: dict[str, Any] = {
        "user_id": state.user_id,
        "history": [history_entry_to_dict(e) for e in state.history],
        "intervals": [list(i) for i in state.intervals],
        "pending": list(state.pending),
        "pending_withdrawals": list(state.pending_withdrawals),
        "notices": [notice_entry_to_dict(n) for n in state.notices],
        "updated_at": format_rfc3339(state.updated_at_us),
    }
    if state.folded is not None:
        out["folded"] = folded_to_dict(state.folded)  # only once a row holds more than HISTORY_KEPT events
    if state.trained_on_by:  # only once a purge named a training run
        out["trained_on_by"] = state.trained_on_by
        out["trained_on_ids"] = list(state.trained_on_ids)
    return orjson.dumps(out)


def _us(value: Any) -> int | None:
    return parse_rfc3339(value) if type(value) is str else None


def decode_consent_state(value: bytes) -> ConsentState:
    """Decode a changelog record. Raises ValueError on a malformed record: the changelog is
    written only by the consent service, so a bad record is a bug to surface, not input."""
    return consent_state_from_dict(orjson.loads(value))


def consent_state_from_dict(obj: Any) -> ConsentState:
    """A changelog record already parsed (the consent look-up's answer carries one). Raises
    KeyError, TypeError or ValueError on a malformed one."""
    history = tuple(
        HistoryEntry(
            objection_id=e["objection_id"],
            kind=e["kind"],
            received_at_us=_us(e["received_at"]) or 0,
            channel=e["channel"],
            reason=e.get("reason"),
            notice_version=e.get("notice_version"),
            enforced_at_us=_us(e.get("enforced_at")),
            purged_at_us=_us(e.get("purged_at")),
            rows_purged=e.get("rows_purged"),
            notice_version_derived=e.get("notice_version_derived", False) is True,
        )
        for e in obj["history"]
    )
    # Records written before notices were recorded have no "notices": none received.
    notices = tuple(
        NoticeEntry(n["notice_id"], n["notice_version"], n["channel"], _us(n["sent_at"]) or 0, n["country"])
        for n in obj.get("notices", ())
    )
    return ConsentState(
        user_id=obj["user_id"],
        history=history,
        intervals=tuple((i[0], i[1]) for i in obj["intervals"]),
        pending=tuple(obj["pending"]),
        pending_withdrawals=tuple(obj.get("pending_withdrawals", ())),
        updated_at_us=_us(obj.get("updated_at")) or 0,
        notices=notices,
        folded=folded_from_dict(obj["folded"]) if obj.get("folded") is not None else None,
        trained_on_by=obj.get("trained_on_by", 0),
        trained_on_ids=tuple(obj.get("trained_on_ids", ())),
    )


def decode_enforcement_view(value: bytes) -> EnforcementView:
    """What ingest needs from a changelog record, without building the whole history:
    the intervals, the objections to purge, the withdrawals to acknowledge and the facts
    of the notice rule (first notice, notice countries)."""
    obj = orjson.loads(value)
    notices = obj.get("notices", ())
    return EnforcementView(
        tuple((i[0], i[1]) for i in obj["intervals"]),
        tuple(obj["pending"]),
        tuple(obj.get("pending_withdrawals", ())),
        notice_facts((_us(n["sent_at"]) or 0 for n in notices), (n["country"] for n in notices)) if notices else NO_NOTICES,
    )


# ------------------------------------------------------------- a person's status


def status_to_dict(status: UserStatus) -> dict[str, Any]:
    """The `GET /v1/objections/me` document (services.gateway's ObjectionStatus describes it)."""
    return {
        "user_id": status.user_id,
        "objected": status.objected,
        "status": status.status.value,
        "history": [history_entry_to_dict(e) for e in status.history],
        "notices": [notice_entry_to_dict(n) for n in status.notices],
        "trained_on_by": status.trained_on_by,
    }


# ----------------------------------------------------------------------- drop counts (audit)


def encode_drop_count(user_id: str, day: str, reason: str, count: int, at_us: int) -> bytes:
    """Per user, day and reason, how many posts ingest dropped since its last emission."""
    return orjson.dumps({"user_id": user_id, "day": day, "reason": reason, "count": count, "at": format_rfc3339(at_us)})


def parse_drop_count(value: bytes | None) -> tuple[str, str, str, int, int] | Invalid:
    """(user_id, day, reason, count, at_us), or Invalid."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"drop count is not JSON ({exc.msg})")
    if type(obj) is not dict:
        return Invalid("bad_value", "drop count is not a JSON object")
    user_id, day, reason, count, at_us = obj.get("user_id"), obj.get("day"), obj.get("reason"), obj.get("count"), parse_rfc3339(obj.get("at"))
    if type(user_id) is not str or type(day) is not str or type(reason) is not str or type(count) is not int or count < 0 or at_us is None:
        return Invalid("bad_value", "malformed drop count")
    return user_id, day, reason, count, at_us
# ------------------------------------------------------------- training-run lineage


def encode_run_read(read: RunRead) -> bytes:
    """A `consentry.lineage` record (keyed by run_id)."""
    return orjson.dumps(
        {
            "run_id": read.run_id,
            "version": read.version,
            "read_at": format_rfc3339(read.read_at_us),
            "rows": read.rows,
            "table": read.table,
            "committed_at": format_rfc3339(read.committed_at_us),
        }
    )


def parse_run_read(value: bytes | None) -> RunRead | Invalid:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"lineage record is not JSON ({exc.msg})")
    if type(obj) is not dict:
        return Invalid("bad_value", "a lineage record must be a JSON object")
    run_id, version, rows, table = obj.get("run_id"), obj.get("version"), obj.get("rows"), obj.get("table")
    read_at, committed_at = _us(obj.get("read_at")), _us(obj.get("committed_at"))
    if type(run_id) is not str or type(version) is not int or type(rows) is not int or type(table) is not str or read_at is None or committed_at is None:
        return Invalid("bad_value", "malformed lineage record")
    return RunRead(run_id, version, committed_at, read_at, rows, table)


def encode_run_user(run_id: str, user_id: str, objection_ids: tuple[str, ...], purged_at_us: int, purge_version: int) -> bytes:
    """A `consentry.run-users` record: one objected user a run included (key run_id, user_id)."""
    return orjson.dumps(
        {"run_id": run_id, "user_id": user_id, "objection_ids": list(objection_ids), "purged_at": format_rfc3339(purged_at_us), "purge_version": purge_version}
    )


def run_user_key(run_id: str, user_id: str) -> bytes:
    """Compaction keeps one record per (run, user); a line feed is in no canonical id."""
    return f"{run_id}\n{user_id}".encode()
