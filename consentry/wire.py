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

from typing import Any

import orjson

from consentry.domain.model import (
    ENFORCED,
    MAX_ID_LENGTH,
    MAX_LANG_LENGTH,
    MAX_POST_BYTES,
    MAX_REASON_LENGTH,
    NO_NOTICES,
    NOTICE_CHANNELS,
    OBJECT,
    OBJECTION_CHANNELS,
    OBJECTION_KINDS,
    PURGED,
    REJECTED_RAW_LIMIT,
    VISIBILITIES,
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
    identifier_problem,
    is_country_code,
    notice_facts,
)
from consentry.timeutil import format_rfc3339, parse_rfc3339

# --------------------------------------------------------------------------- posts


def _is_canonical_utc(text: str) -> bool:
    """True when `text` (a valid RFC 3339 date-time) is exactly what format_rfc3339 writes."""
    n = len(text)
    if text[-1] != "Z" or text[10] != "T" or text[4] != "-" or text[7] != "-" or text[13] != ":" or text[16] != ":":
        return False
    return n == 20 or (n == 27 and text[19] == "." and text[20:26] != "000000")


def _check_id(obj: dict[str, Any], name: str) -> str | Invalid:
    value = obj.get(name)
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
    return value


def _is_plain_id(value: object) -> bool:
    """The common case, checked in C: a printable ASCII id of the right length without
    surrounding spaces is canonical (the hot path; anything else takes `_check_id`)."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_ID_LENGTH
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    )


def _optional_str(obj: dict[str, Any], name: str, max_length: int) -> str | None | Invalid:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is not str:
        return Invalid("wrong_type", f"'{name}' must be a string or null")
    if len(value) > max_length:
        return Invalid("bad_value", f"'{name}' is longer than {max_length} characters")
    if "\x00" in value:
        return Invalid("null_byte", f"'{name}' contains a NUL character")
    return value


def parse_post(value: bytes | None, key: bytes | None) -> Post | Invalid:
    """Validate one `posts` message against the contract."""
    if value is None:
        return Invalid("empty", "message has no value")
    if len(value) > MAX_POST_BYTES:
        return Invalid("too_large", f"value is {len(value)} bytes, over the 1 MiB limit")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid("invalid_json", f"value is not valid UTF-8 JSON ({exc.msg})")
    if type(obj) is not dict:
        return Invalid("not_an_object", f"value is a JSON {type(obj).__name__}, not an object")

    post_id = obj.get("post_id")
    if not _is_plain_id(post_id):
        post_id = _check_id(obj, "post_id")
        if type(post_id) is Invalid:
            return post_id
    user_id = obj.get("user_id")
    if not _is_plain_id(user_id):
        user_id = _check_id(obj, "user_id")
        if type(user_id) is Invalid:
            return user_id
    if key is None:
        return Invalid("key_mismatch", "message has no key; the key must be the user_id")
    if key != user_id.encode():
        return Invalid("key_mismatch", "message key differs from its user_id")

    created_at = obj.get("created_at")
    if created_at is None:
        return Invalid("missing_field", "required field 'created_at' is missing")
    if type(created_at) is not str:
        return Invalid("wrong_type", "'created_at' must be a string")
    created_at_us = parse_rfc3339(created_at)
    if created_at_us is None:
        return Invalid("bad_timestamp", "'created_at' is not an RFC 3339 date-time with a time zone")

    visibility = obj.get("visibility")
    if visibility is None:
        return Invalid("missing_field", "required field 'visibility' is missing")
    if type(visibility) is not str or visibility not in VISIBILITIES:  # type first: a list is unhashable
        return Invalid("bad_value", "'visibility' must be one of public, friends, private")

    text = obj.get("text")
    if text is None:
        return Invalid("missing_field", "required field 'text' is missing")
    if type(text) is not str:
        return Invalid("wrong_type", "'text' must be a string")
    if "\x00" in text:
        return Invalid("null_byte", "'text' contains a NUL character")

    lang = _optional_str(obj, "lang", MAX_LANG_LENGTH)
    if type(lang) is Invalid:
        return lang
    country = obj.get("country")
    if country is not None and not is_country_code(country):
        return Invalid("bad_value", "'country' must be an ISO 3166-1 alpha-2 code such as FR")

    minor = obj.get("author_is_minor", False)
    if type(minor) is not bool:
        # null or "false" is not an answer: when we cannot tell, fail closed.
        return Invalid("wrong_type", "'author_is_minor' must be true or false")

    return Post(post_id, user_id, created_at_us, visibility, text, lang, country, minor, created_at if _is_canonical_utc(created_at) else None)


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
    global _last_ingested_at
    last = _last_ingested_at
    if last[0] != ingested_at_us:
        last = _last_ingested_at = (ingested_at_us, format_rfc3339(ingested_at_us))
    return orjson.dumps(
        {
            "type": "post",
            "post_id": post.post_id,
            "user_id": post.user_id,
            "created_at": post.created_at_text or format_rfc3339(post.created_at_us),
            "text": post.text,
            "lang": post.lang,
            "country": post.country,
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
    objection_id = _check_id(obj, "objection_id")
    if type(objection_id) is Invalid:
        return objection_id
    user_id = _check_id(obj, "user_id")
    if type(user_id) is Invalid:
        return user_id
    kind = obj.get("kind")
    if type(kind) is not str or kind not in OBJECTION_KINDS:
        return Invalid("bad_value", "'kind' must be 'object' or 'withdraw'")
    received_at = obj.get("received_at")
    if type(received_at) is not str:
        return Invalid("missing_field", "'received_at' must be an RFC 3339 string")
    received_at_us = parse_rfc3339(received_at)
    if received_at_us is None:
        return Invalid("bad_timestamp", "'received_at' is not an RFC 3339 date-time with a time zone")
    channel = obj.get("channel")
    if type(channel) is not str or channel not in OBJECTION_CHANNELS:
        return Invalid("bad_value", "'channel' must be one of web, app, email, api, import")
    reason = _optional_str(obj, "reason", MAX_REASON_LENGTH)
    if type(reason) is Invalid:
        return reason
    notice_version = _optional_str(obj, "notice_version", MAX_ID_LENGTH)
    if type(notice_version) is Invalid:
        return notice_version
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
    notice_id = _check_id(obj, "notice_id")
    if type(notice_id) is Invalid:
        return notice_id
    user_id = _check_id(obj, "user_id")
    if type(user_id) is Invalid:
        return user_id
    version = _check_id(obj, "notice_version")
    if type(version) is Invalid:
        return version
    channel = obj.get("channel")
    if type(channel) is not str or channel not in NOTICE_CHANNELS:
        return Invalid("bad_value", "'channel' must be 'email' or 'in_app'")
    sent_at = obj.get("sent_at")
    if type(sent_at) is not str:
        return Invalid("missing_field", "'sent_at' must be an RFC 3339 string")
    sent_at_us = parse_rfc3339(sent_at)
    if sent_at_us is None:
        return Invalid("bad_timestamp", "'sent_at' is not an RFC 3339 date-time with a time zone")
    country = obj.get("country")
    if country is None:
        return Invalid("missing_field", "required field 'country' is missing")
    if not is_country_code(country):
        return Invalid("bad_value", "'country' must be an ISO 3166-1 alpha-2 code such as FR")
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
    return Receipt(
        obj["type"],
        user_id,
        tuple(ids),
        at_us,
        rows if type(rows) is int else None,
        parse_rfc3339(enforced_at),
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
    }
