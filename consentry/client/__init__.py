"""A small client for Consentry's two outside callers: producers of posts and the notice sender.

Importable with the standard library alone: the checks are the declarations the services
validate with (consentry.contract), so a message `check_post` accepts is one ingest accepts
(but for the record key, which `post_record` sets). The extras are imported only when used:
`aiokafka` to publish (`publish_posts`, `publish_notices`), `PyJWT` to sign one-click links
(`objection_link`, the signing code of consentry.links). Importing a file of notices through
the gateway (`import_notices`) uses urllib.

    from consentry.client import check_post, post_record, publish_posts

    check_post(post)                      # raises InvalidMessage(code, detail), as ingest would reject it
    key, value = post_record(post)        # key: the user_id; value: compact UTF-8 JSON
    await publish_posts("kafka:9092", [post])

Keys are the user_id (contract, "Topics"): with the client's default partitioner (murmur2,
as the Java client's), a post lands in its user's home partition when `posts` has
CONSENTRY_PARTITIONS partitions, and ingest decides it in place; any other partitioner works,
ingest re-keys.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from consentry.contract import NOTICE, OBJECTION, POST, Validator
from consentry.domain.model import MAX_POST_BYTES, Invalid

__all__ = [
    "InvalidMessage", "check_post", "check_notice", "check_objection", "post_record", "notice_record", "frame",
    "publish_posts", "publish_notices", "objection_link", "import_notices",
]

_POST, _NOTICE, _OBJECTION = Validator(POST), Validator(NOTICE), Validator(OBJECTION)


class InvalidMessage(ValueError):
    """What ingest (or the consent service) would refuse: `code` is the reason code it would
    give (`posts.rejected`'s `reason_code`), `detail` the sentence."""

    def __init__(self, invalid: Invalid) -> None:
        super().__init__(invalid.reason)
        self.code = invalid.code
        self.detail = invalid.detail


def _encode(message: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(Invalid("invalid_json", f"not encodable as JSON ({exc})")) from exc
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise InvalidMessage(Invalid("invalid_json", "not valid UTF-8 once encoded")) from exc


def _check(validator: Validator, message: Any, key: bytes | None = None) -> None:
    if type(message) is not dict:
        raise InvalidMessage(Invalid("not_an_object", f"a {validator.message.name} is a JSON object, not {type(message).__name__}"))
    result = validator.validate(message, key)
    if type(result) is Invalid:
        raise InvalidMessage(result)


def check_post(post: Mapping[str, Any]) -> None:
    """Raises InvalidMessage when ingest would reject `post` (published with `post_record`'s key)."""
    post_record(post)


def post_record(post: Mapping[str, Any], *, schema_id: int | None = None) -> tuple[bytes, bytes]:
    """(key, value) of `post`, checked: the key is its user_id, the value compact UTF-8 JSON,
    framed as a Schema Registry JSON serializer frames it when `schema_id` is given (for
    ingest's CONSENTRY_POSTS_FRAMING=schema-registry)."""
    user_id = post.get("user_id") if isinstance(post, Mapping) else None
    key = user_id.encode("utf-8", "surrogatepass") if type(user_id) is str else None
    _check(_POST, dict(post) if isinstance(post, Mapping) else post, key)
    value = _encode(post)
    if len(value) > MAX_POST_BYTES:
        raise InvalidMessage(Invalid("too_large", f"value is {len(value)} bytes, over the 1 MiB limit"))
    return key, frame(value, schema_id) if schema_id is not None else value  # type: ignore[return-value]


def check_notice(notice: Mapping[str, Any]) -> None:
    """Raises InvalidMessage when the consent service would refuse `notice`."""
    _check(_NOTICE, dict(notice) if isinstance(notice, Mapping) else notice)


def check_objection(event: Mapping[str, Any]) -> None:
    """Raises InvalidMessage when the consent service would refuse an objection event (imports)."""
    _check(_OBJECTION, dict(event) if isinstance(event, Mapping) else event)


def notice_record(notice: Mapping[str, Any]) -> tuple[bytes, bytes]:
    check_notice(notice)
    return notice["user_id"].encode(), _encode(notice)


def frame(value: bytes, schema_id: int) -> bytes:
    """Magic byte 0, the schema id (4 bytes, big-endian), then `value` (consentry.wire.unframe's inverse)."""
    if not 0 <= schema_id < 1 << 32:
        raise ValueError("a schema id is 4 bytes")
    return b"\x00" + schema_id.to_bytes(4, "big") + value


# ----------------------------------------------------------------------- publishing


async def _publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], options: dict[str, Any]) -> int:
    try:
        from aiokafka import AIOKafkaProducer
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("publishing needs aiokafka: pip install aiokafka") from exc

    # acks=all; no idempotence by default (the embedded broker has no idempotent producers): a
    # retry may write a record twice, which changes nothing (post_id and notice_id are
    # idempotent). On Apache Kafka pass enable_idempotence=True to avoid the duplicates.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{"acks": "all", "linger_ms": 5, **options})
    await producer.start()
    try:
        # Every record checked before the first is sent; each one acknowledged before returning.
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(records)


async def publish_posts(
    bootstrap: str, posts: Iterable[Mapping[str, Any]], *, topic: str = "posts", schema_id: int | None = None, **producer_options: Any
) -> int:
    """Check every post, then publish them keyed by user_id with acks=all; returns how many the
    broker acknowledged. Raises InvalidMessage before sending anything if one is invalid.
    `producer_options` go to aiokafka's AIOKafkaProducer (security_protocol, ssl_context, sasl_*)."""
    records = [post_record(post, schema_id=schema_id) for post in posts]
    return await _publish(bootstrap, topic, records, producer_options)


async def publish_notices(bootstrap: str, notices: Iterable[Mapping[str, Any]], *, topic: str = "notices", **producer_options: Any) -> int:
    """As publish_posts, for notices (the platform's notification system, as it sends them)."""
    records = [notice_record(notice) for notice in notices]
    return await _publish(bootstrap, topic, records, producer_options)


# ------------------------------------------------------------------- notice sender


def objection_link(link_keys: str, base_url: str, user_id: str, *, channel: str = "email", ttl_seconds: int = 30 * 24 * 3600) -> str:
    """The signed, expiring one-click objection URL a notice carries. `link_keys` is the value of
    CONSENTRY_LINK_KEYS (`kid:secret,...`, oldest first: the newest signs). Needs PyJWT."""
    try:
        from consentry.keys import KeySet
        from consentry.links import objection_link as link
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("signing links needs PyJWT: pip install PyJWT") from exc

    return link(KeySet.parse(link_keys, "CONSENTRY_LINK_KEYS"), base_url, user_id, channel=channel, ttl_seconds=ttl_seconds)


def import_notices(gateway_url: str, admin_token: str, notices: str | Path | Iterable[Mapping[str, Any]], *, timeout: float = 600.0) -> dict[str, Any]:
    """Import notices already sent through the gateway (`POST /v1/admin/notices:import`, an
    operator's token): a JSON Lines file, or notices to encode. Returns the gateway's report
    (`lines`, `accepted`, `duplicates`, `rejected`, `rejected_lines`). Importing the same file
    again is safe: the consent service records a notice_id once."""
    if isinstance(notices, (str, Path)):
        body: Any = Path(notices).open("rb")
    else:
        body = b"".join(_encode(n) + b"\n" for n in notices)
    request = urllib.request.Request(
        gateway_url.rstrip("/") + "/v1/admin/notices:import",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/x-ndjson"},
    )
    if not isinstance(body, bytes):
        request.add_header("Content-Length", str(Path(notices).stat().st_size))  # type: ignore[arg-type]
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    finally:
        if not isinstance(body, bytes):
            body.close()
