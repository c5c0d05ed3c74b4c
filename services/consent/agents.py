"""The consent agent: the `async for` loop and the table writes; decisions are in
consentry.domain.consent."""

from __future__ import annotations

import logging

import faust
from opentelemetry.trace import SpanKind

from consentry import failpoints, tracing
from consentry.domain import consent as domain
from consentry.logs import ids, user_ref
from consentry.domain.model import ENFORCED, OBJECT, Channel, Invalid
from consentry.wire import decode_consent_state, encode_consent_state, encode_rejection, parse_notice, parse_objection, parse_receipt
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from services.consent import failclosed, metrics
from services.consent.backlog import ConsentWatch
from services.consent.settings import ConsentSettings

log = logging.getLogger(__name__)

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def register_agents(app: faust.App, table: faust.Table, settings: ConsentSettings, watch: ConsentWatch) -> None:
    topics = settings.topics
    partitions = settings.partitions
    source = app.topic(topics.objections, topics.receipts, topics.notices, **RAW)
    objections = app.topic(topics.objections, **RAW)
    notices = app.topic(topics.notices, **RAW)
    dead_letters = app.topic(topics.consent_dead_letters, **RAW)
    source_names = {topics.objections: "objections", topics.notices: "notices", topics.receipts: "receipts"}

    async def dead_letter(topic: str, invalid: Invalid, partition: int, offset: int, value: bytes | None) -> None:
        """An event this worker cannot apply goes to the dead-letter topic, counted and logged,
        and the broker acknowledges it before the event's offset can be committed."""
        name = source_names.get(topic, topic)
        metrics.DEAD_LETTERS.labels(name, invalid.code).inc()
        log.error(
            "dead letter: %s[%d]@%d cannot be applied (%s)", topic, partition, offset, invalid.reason,
            extra=ids(topic=topic, partition=partition, offset=offset),
        )
        current = faust.current_event()
        key = current.key if current is not None else None
        record = encode_rejection(invalid, topic, partition, offset, value, now_us())
        await send_acknowledged(dead_letters, key, record, None, f"the dead letter of {topic}[{partition}]@{offset}")

    def load(key: bytes):  # type: ignore[no-untyped-def]
        raw = table.get(key)
        return decode_consent_state(raw) if raw is not None else None

    def store(key: bytes, state) -> None:  # type: ignore[no-untyped-def]
        # RocksDB has the row now; its changelog record waits in faust's producer buffer
        # until the next commit flushes it (crash window: consentry/failpoints.py).
        table[key] = encode_consent_state(state)
        failpoints.hit("consent.after_table_write")

    async def on_objection(value: bytes | None, partition: int, offset: int) -> None:
        event = parse_objection(value)
        if type(event) is Invalid:
            await dead_letter(topics.objections, event, partition, offset, value)
            return
        key = event.user_id.encode()
        home = home_partition(event.user_id, partitions)
        if partition != home:
            # Keep the table co-partitioned with ingest: move it to its user's home partition.
            metrics.REPARTITIONED.inc()
            await send_acknowledged(objections, key, value, home, f"the objection re-homed from {topics.objections}[{partition}]@{offset}")
            return
        state = load(key)
        updated = domain.apply_objection(state, event, now_us())
        where = ids(user_id=event.user_id, objection_id=event.objection_id, topic=topics.objections, partition=partition, offset=offset)
        if updated is state:
            metrics.DUPLICATES.inc()
            log.info("%s %s already applied (re-delivered)", event.kind, event.objection_id, extra=where)
        else:
            metrics.OBJECTIONS.labels(event.kind, event.channel).inc()
            log.info("%s %s applied", event.kind, event.objection_id, extra=where)
        tracing.annotate(objection_id=event.objection_id, user=user_ref(event.user_id))
        # Written even when unchanged: after a crash the local store can hold a write whose
        # changelog record never left; re-delivery then re-asserts it for the readers.
        store(key, updated)
        watch.on_write(state, updated)

    async def on_notice(value: bytes | None, partition: int, offset: int) -> None:
        notice = parse_notice(value)
        if type(notice) is Invalid:
            await dead_letter(topics.notices, notice, partition, offset, value)
            return
        key = notice.user_id.encode()
        home = home_partition(notice.user_id, partitions)
        if partition != home:
            # Like objections: the user's row lives in the changelog partition ingest loads for them.
            metrics.REPARTITIONED_NOTICES.inc()
            await send_acknowledged(notices, key, value, home, f"the notice re-homed from {topics.notices}[{partition}]@{offset}")
            return
        state = load(key)
        updated = domain.apply_notice(state, notice, now_us())
        if updated is state:
            metrics.DUPLICATES_NOTICES.inc()
        else:
            metrics.NOTICES.labels(notice.channel).inc()
        store(key, updated)  # re-asserted even when unchanged, as above
        watch.on_write(state, updated)

    async def on_receipt(value: bytes | None, partition: int, offset: int) -> None:
        receipt = parse_receipt(value)
        if type(receipt) is Invalid:
            await dead_letter(topics.receipts, receipt, partition, offset, value)
            return
        key = receipt.user_id.encode()
        state = load(key)
        updated = domain.apply_receipt(state, receipt, now_us())
        metrics.RECEIPTS.labels(receipt.kind).inc()
        tracing.annotate(receipt=str(receipt.kind), objection_ids=",".join(receipt.objection_ids), user=user_ref(receipt.user_id))
        if updated is None:
            return
        # Written even when unchanged, like objections: a re-delivered receipt re-asserts a
        # stamp whose changelog record may have died with the process that wrote RocksDB.
        store(key, updated)
        watch.on_write(state, updated)
        if updated is not state:
            _observe_latency(state, updated, receipt.kind)

    async def dispatch(value: bytes | None, topic: str, partition: int, offset: int) -> None:
        if topic == topics.receipts:
            await on_receipt(value, partition, offset)
        elif topic == topics.notices:
            await on_notice(value, partition, offset)
        else:
            await on_objection(value, partition, offset)

    @app.agent(source, name=f"{settings.app_id}-agent")
    async def consent_agent(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            message = event.message
            await failpoints.slow("consent.before_apply")  # holds an event in flight (tests only)
            try:
                parent = tracing.context_from(event.headers)
                if parent is None:  # not a traced objection's record (posts' producers, imports)
                    await dispatch(event.value, message.topic, message.partition, message.offset)
                else:
                    name = "consent.receipt" if message.topic == topics.receipts else "consent.apply"
                    with tracing.span(
                        name, parent, kind=SpanKind.CONSUMER,
                        **{"messaging.destination.name": message.topic, "messaging.destination.partition.id": str(message.partition),
                           "messaging.kafka.offset": message.offset},
                    ):
                        await dispatch(event.value, message.topic, message.partition, message.offset)
            except Exception as exc:
                # A bug, not input: stop the process (raising would make faust commit the
                # offset and restart the agent), so the event is re-read after the restart.
                log.exception("consent agent failed at %s[%d]@%d", message.topic, message.partition, message.offset)
                failclosed.stop(f"applying {message.topic}[{message.partition}]@{message.offset} failed", exc)


async def send_acknowledged(topic: faust.TopicT, key: bytes | None, value: bytes, partition: int | None, what: str) -> None:
    """Send one record and wait until the broker acknowledged it, so the event that caused it is
    not acknowledged (nor its offset committed) before; a record that cannot be sent stops the
    worker (services/consent/failclosed.py)."""
    try:
        sent = await topic.send(key=key, value=value, partition=partition)
        await sent
    except Exception as exc:
        failclosed.stop(f"{what} cannot be sent", exc)


def _observe_latency(before, after, kind: str) -> None:  # type: ignore[no-untyped-def]
    old = {e.objection_id: e for e in (before.history if before else ())}
    for entry in after.history:
        previous = old.get(entry.objection_id)
        if entry.kind != OBJECT or entry.channel == Channel.IMPORT or previous is None:
            continue  # historical imports carry their original time: not a latency
        if kind == ENFORCED and previous.enforced_at_us is None and entry.enforced_at_us is not None:
            metrics.ENFORCE_LATENCY.observe(max(entry.enforced_at_us - entry.received_at_us, 0) / 1e6)
        if previous.purged_at_us is None and entry.purged_at_us is not None:
            metrics.PURGE_LATENCY.observe(max(entry.purged_at_us - entry.received_at_us, 0) / 1e6)
