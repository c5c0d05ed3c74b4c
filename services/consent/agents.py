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
from consentry.wire import decode_consent_state, encode_rejection, parse_notice, parse_objection, parse_receipt
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from services.consent import failclosed, metrics
from services.consent.backlog import ConsentWatch
from services.consent.rows import StagedRows, TableRows
from services.consent.settings import ConsentSettings

log = logging.getLogger(__name__)

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def register_agents(app: faust.App, table: faust.Table, settings: ConsentSettings, watch: ConsentWatch, rows: TableRows) -> None:
    topics = settings.topics
    partitions = settings.partitions
    source = app.topic(topics.objections, topics.receipts, topics.notices, **RAW)
    objections = app.topic(topics.objections, **RAW)
    notices = app.topic(topics.notices, **RAW)
    dead_letters = app.topic(topics.consent_dead_letters, **RAW)
    source_names = {topics.objections: "objections", topics.notices: "notices", topics.receipts: "receipts"}
    staged = StagedRows()  # the rows of the batch being applied

    async def dead_letter(key: bytes | None, topic: str, invalid: Invalid, partition: int, offset: int, value: bytes | None) -> None:
        """An event this worker cannot apply goes to the dead-letter topic, counted and logged,
        and the broker acknowledges it before the event's offset can be committed."""
        name = source_names.get(topic, topic)
        metrics.DEAD_LETTERS.labels(name, invalid.code).inc()
        log.error(
            "dead letter: %s[%d]@%d cannot be applied (%s)", topic, partition, offset, invalid.reason,
            extra=ids(topic=topic, partition=partition, offset=offset),
        )
        record = encode_rejection(invalid, topic, partition, offset, value, now_us())
        await send_acknowledged(dead_letters, key, record, None, f"the dead letter of {topic}[{partition}]@{offset}")

    def load(key: bytes, partition: int):  # type: ignore[no-untyped-def]
        row = staged.get(key)
        if row is not None:  # changed earlier in this batch
            return row.state
        raw = rows.get(key, partition)
        return decode_consent_state(raw) if raw is not None else None

    def store(key: bytes, partition: int, state) -> None:  # type: ignore[no-untyped-def]
        # Written with the batch's other rows (services/consent/rows.py), before any of the
        # batch's events is acknowledged; the record carries this event's trace context.
        staged.put(key, partition, state, tracing.headers() or None)

    async def on_objection(key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        event = parse_objection(value)
        if type(event) is Invalid:
            await dead_letter(key, topics.objections, event, partition, offset, value)
            return
        user = event.user_id.encode()
        home = home_partition(event.user_id, partitions)
        if partition != home:
            # Keep the table co-partitioned with ingest: move it to its user's home partition.
            metrics.REPARTITIONED.inc()
            await send_acknowledged(objections, user, value, home, f"the objection re-homed from {topics.objections}[{partition}]@{offset}")
            return
        state = load(user, partition)
        updated = domain.apply_objection(state, event, now_us())
        logged = log.isEnabledFor(logging.INFO)  # the line's fields (a hash of the id) only when it is written
        where = ids(user_id=event.user_id, objection_id=event.objection_id, topic=topics.objections, partition=partition, offset=offset) if logged else None
        if updated is state:
            metrics.DUPLICATES.inc()
            if logged:
                log.info("%s %s already applied (re-delivered)", event.kind, event.objection_id, extra=where)
        else:
            metrics.objections_applied(event.kind, event.channel).inc()
            if logged:
                log.info("%s %s applied", event.kind, event.objection_id, extra=where)
        if tracing.recording():
            tracing.annotate(objection_id=event.objection_id, user=user_ref(event.user_id))
        # Written even when unchanged: after a crash the local store can hold a write whose
        # changelog record never left; re-delivery then re-asserts it for the readers.
        store(user, partition, updated)
        watch.on_write(state, updated)

    async def on_notice(key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        notice = parse_notice(value)
        if type(notice) is Invalid:
            await dead_letter(key, topics.notices, notice, partition, offset, value)
            return
        user = notice.user_id.encode()
        home = home_partition(notice.user_id, partitions)
        if partition != home:
            # Like objections: the user's row lives in the changelog partition ingest loads for them.
            metrics.REPARTITIONED_NOTICES.inc()
            await send_acknowledged(notices, user, value, home, f"the notice re-homed from {topics.notices}[{partition}]@{offset}")
            return
        state = load(user, partition)
        updated = domain.apply_notice(state, notice, now_us())
        if updated is state:
            metrics.DUPLICATES_NOTICES.inc()
        else:
            metrics.notices_recorded(notice.channel).inc()
        store(user, partition, updated)  # re-asserted even when unchanged, as above
        watch.on_write(state, updated)

    async def on_receipt(key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        receipt = parse_receipt(value)
        if type(receipt) is Invalid:
            await dead_letter(key, topics.receipts, receipt, partition, offset, value)
            return
        user = receipt.user_id.encode()
        state = load(user, partition)
        updated = domain.apply_receipt(state, receipt, now_us())
        metrics.receipts_applied(receipt.kind).inc()
        if tracing.recording():
            tracing.annotate(receipt=str(receipt.kind), objection_ids=",".join(receipt.objection_ids), user=user_ref(receipt.user_id))
        if updated is None:
            return
        # Written even when unchanged, like objections: a re-delivered receipt re-asserts a
        # stamp whose changelog record may have died with the process that wrote RocksDB.
        store(user, partition, updated)
        watch.on_write(state, updated)
        if updated is not state:
            _observe_latency(state, updated, receipt.kind)

    async def dispatch(key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int) -> None:
        if topic == topics.receipts:
            await on_receipt(key, value, partition, offset)
        elif topic == topics.notices:
            await on_notice(key, value, partition, offset)
        else:
            await on_objection(key, value, partition, offset)

    async def apply(event: faust.EventT) -> None:
        message = event.message
        await failpoints.slow("consent.before_apply")  # holds an event in flight (tests only)
        try:
            parent = tracing.context_from(event.headers)
            if parent is None:  # not a traced objection's record (posts' producers, imports)
                await dispatch(event.key, event.value, message.topic, message.partition, message.offset)
            else:
                name = "consent.receipt" if message.topic == topics.receipts else "consent.apply"
                with tracing.span(
                    name, parent, kind=SpanKind.CONSUMER,
                    **{"messaging.destination.name": message.topic, "messaging.destination.partition.id": str(message.partition),
                       "messaging.kafka.offset": message.offset},
                ):
                    await dispatch(event.key, event.value, message.topic, message.partition, message.offset)
        except Exception as exc:
            # A bug, not input: stop the process (raising would make faust commit the
            # offset and restart the agent), so the event is re-read after the restart.
            log.exception("consent agent failed at %s[%d]@%d", message.topic, message.partition, message.offset)
            failclosed.stop(f"applying {message.topic}[{message.partition}]@{message.offset} failed", exc)

    batch_max, within = settings.consent_batch_max, settings.consent_batch_within_ms / 1000

    @app.agent(source, name=f"{settings.app_id}-agent")
    async def consent_agent(stream):  # type: ignore[no-untyped-def]
        # A batch at a time: faust acknowledges the batch's events after this loop's body
        # returns, so after their rows are in the store and their changelog records on the broker.
        async for events in stream.take_events(batch_max, within=within):
            for event in events:
                await apply(event)
            try:
                await rows.write(staged)
            except Exception as exc:
                first = events[0].message
                failclosed.stop(
                    f"the changelog records of {len(staged)} consent rows (a batch of {len(events)} events from "
                    f"{first.topic}[{first.partition}]@{first.offset}) cannot be sent", exc)
            finally:
                staged.clear()


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
