"""`consentry produce`, `consentry tail` and `consentry status`: everyday tools that talk to any
Kafka Consentry talks to, the embedded broker included (Debian's kcat, librdkafka 2.0.2, cannot:
README, "Kafka clients and the embedded broker")."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlencode

from consentry.settings import CommonSettings


def topic_name(settings: CommonSettings, topic: str) -> str:
    """TOPIC as the system names it: the contract's and the internal names take CONSENTRY_TOPIC_PREFIX."""
    return topic if not settings.topic_prefix or topic.startswith(settings.topic_prefix) else settings.topic_prefix + topic


# ---------------------------------------------------------------------------- produce


@dataclass
class ProduceReport:
    lines: int = 0
    sent: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _checker(topic: str) -> Callable[[dict[str, Any]], None] | None:
    """The contract check of a topic's messages (by its unprefixed name), or None."""
    from consentry import client

    return {"posts": client.check_post, "notices": client.check_notice, "objections": client.check_objection}.get(topic)


def records(lines: Iterator[bytes], check: Callable[[dict[str, Any]], None] | None, report: ProduceReport, schema_id: int | None) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of each JSON line: the key is its user_id; blank lines are passed over; a
    line that is not a JSON object, or fails the topic's check, is reported and skipped."""
    from consentry.client import InvalidMessage, frame

    for number, line in enumerate(lines, start=1):
        report.lines = number
        text = line.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            report.skipped.append((number, f"invalid_json: {exc}"))
            continue
        if type(obj) is not dict:
            report.skipped.append((number, "not_an_object: a line must be one JSON object"))
            continue
        if check is not None:
            try:
                check(obj)
            except InvalidMessage as refused:
                report.skipped.append((number, str(refused)))
                continue
        user_id = obj.get("user_id")
        key = user_id.encode("utf-8", "surrogatepass") if type(user_id) is str else None
        yield key, frame(text, schema_id) if schema_id is not None else text


async def produce(
    settings: CommonSettings, topic: str, lines: Iterator[bytes], *, check: bool, schema_id: int | None, progress: Callable[[ProduceReport], None]
) -> ProduceReport:
    from aiokafka import AIOKafkaProducer

    from consentry.kafka import producer_options

    report = ProduceReport()
    checker = _checker(topic.removeprefix(settings.topic_prefix)) if check else None
    producer = AIOKafkaProducer(**producer_options(settings), linger_ms=20)
    await producer.start()
    try:
        pending = []
        for key, value in records(lines, checker, report, schema_id):
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)  # acknowledged before they count as sent
                report.sent += len(pending)
                pending.clear()
                progress(report)
        await asyncio.gather(*pending)
        report.sent += len(pending)
        progress(report)
    finally:
        await producer.stop()
    return report


# ------------------------------------------------------------------------------- tail


def _matches(user: str | None, key: bytes | None, value: bytes | None) -> bool:
    if user is None:
        return True
    if key == user.encode():
        return True
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return False
    return type(obj) is dict and obj.get("user_id") == user


def render(record: Any, raw: bool) -> str:
    """One record: raw, its value as it is; pretty, where it is, its key and its JSON indented."""
    value: bytes | None = record.value
    if raw:
        return (value or b"").decode("utf-8", "replace")
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.timestamp / 1000)) + f".{record.timestamp % 1000:03d}Z"
    key = record.key.decode("utf-8", "replace") if record.key is not None else "-"
    head = f"{record.topic}[{record.partition}]@{record.offset}  {when}  key={key}"
    if value is None:
        return f"{head}\n(no value: a tombstone)"
    body = value
    if value[:1] == b"\x00" and len(value) >= 5:  # a Schema Registry frame
        head += f"  schema_id={int.from_bytes(value[1:5], 'big')}"
        body = value[5:]
    try:
        shown = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        shown = body.decode("utf-8", "replace")
    return f"{head}\n{shown}"


async def tail(
    settings: CommonSettings, topic: str, *, from_beginning: bool, user: str | None, raw: bool, limit: int | None, idle: float | None, out: IO[str],
    ready: Callable[[int], None] = lambda partitions: None,
) -> int:
    """Print the records of `topic` (every partition, no consumer group: nothing is committed)
    until `limit` records were printed, `idle` seconds passed without one, or it is stopped."""
    from aiokafka import AIOKafkaConsumer

    from consentry.kafka import assign_whole_topic, client_options

    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, fetch_max_wait_ms=200)
    await consumer.start()
    shown = 0
    try:
        assigned = await assign_whole_topic(consumer, topic)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve the positions now: what is produced from here on is shown
                await consumer.position(tp)
        ready(len(assigned))
        quiet_since = time.monotonic()
        while limit is None or shown < limit:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            records = sorted((r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.partition, r.offset))
            if records:
                quiet_since = time.monotonic()
            for record in records:
                if _matches(user, record.key, record.value):
                    print(render(record, raw), file=out, flush=True)
                    shown += 1
                    if limit is not None and shown >= limit:
                        break
            if idle is not None and time.monotonic() - quiet_since >= idle:
                break
    finally:
        await consumer.stop()
    return shown


# ----------------------------------------------------------------------------- status


def consent_status(consent_url: str, service_token: str | None, user: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, document) of the consent service's view of `user` (`/v1/user/status?user_id=`,
    the document `GET /v1/objections/me` shows the person)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{consent_url.rstrip('/')}/v1/user/status?{urlencode({'user_id': user})}")
    if service_token:
        request.add_header("Authorization", f"Bearer {service_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, {"detail": error.reason}


def stored_rows(store_uri: str, user: str) -> int:
    """How many rows of `user` the training store holds (counts only, never text)."""
    from deltalake import DeltaTable, QueryBuilder

    from consentry.partitioning import bucket_of
    from services.sink.store import BUCKETS_PROPERTY

    table = DeltaTable(store_uri)
    literal = "'" + user.replace("'", "''") + "'"
    where = f"user_id = {literal}"
    buckets = table.metadata().configuration.get(BUCKETS_PROPERTY)
    if buckets:  # the bucket layout: only the user's bucket is read
        where = f"bucket = {bucket_of(user, int(buckets))} AND {where}"
    result = QueryBuilder().register("training", table).execute(f"SELECT count(*) AS n FROM training WHERE {where}").read_all()
    return int(result.column("n")[0].as_py())


def read_lines(source: IO[bytes]) -> Iterator[bytes]:
    yield from source


def stdin_lines() -> Iterator[bytes]:
    yield from sys.stdin.buffer
