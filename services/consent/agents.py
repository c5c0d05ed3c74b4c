"""The consent agent: the `async for` loop and the table writes; decisions are in
consentry.domain.consent."""

from __future__ import annotations

import logging

import faust
from opentelemetry.trace import SpanKind

from consentry import failpoints, patches, tracing
from consentry.domain import consent as domain
from consentry.logs import ids, user_ref
from consentry.domain.model import ENFORCED, OBJECT, Channel, Invalid
from consentry.wire import decode_consent_state, encode_consent_state, encode_rejection, parse_notice, parse_objection, parse_receipt
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from services.consent import batching, failclosed, metrics
from services.consent.backlog import ConsentWatch
from services.consent.batching import Batcher, Row, Tally
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

    async def dead_letter(topic: str, invalid: Invalid, key: bytes | None, partition: int, offset: int, value: bytes | None) -> None:
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

    def load(event, key: bytes):  # type: ignore[no-untyped-def]
        with patches.acting_for(event):  # the table reads the partition of the event's user
            raw = table.get(key)
        return decode_consent_state(raw) if raw is not None else None

    def store(row: Row) -> None:
        # RocksDB has the row now; its changelog record waits in faust's producer buffer
        # until the next commit flushes it (crash window: consentry/failpoints.py). The events
        # that led to it are acknowledged only after this, once their whole batch is written.
        with patches.acting_for(row.event):  # the changelog partition: the event's
            table[row.key] = encode_consent_state(row.state)
        failpoints.hit("consent.after_table_write")
        watch.on_write(row.written, row.state)
        row.written = row.state
        row.dirty = False

    def row_for(event, key: bytes, partition: int, rows: dict) -> Row:  # type: ignore[no-untyped-def]
        row = rows.get((key, partition))
        if row is None:
            state = load(event, key)
            row = rows[(key, partition)] = Row(key, event, state)
        else:
            row.event = event
        return row

    async def on_objection(event, rows: dict, tally: Tally, traced: bool) -> Row | None:  # type: ignore[no-untyped-def]
        value, message = event.value, event.message
        partition, offset = message.partition, message.offset
        objection = parse_objection(value)
        if type(objection) is Invalid:
            await dead_letter(topics.objections, objection, event.key, partition, offset, value)
            return None
        key = objection.user_id.encode()
        home = home_partition(objection.user_id, partitions)
        if partition != home:
            # Keep the table co-partitioned with ingest: move it to its user's home partition.
            metrics.REPARTITIONED.inc()
            await send_acknowledged(objections, key, value, home, f"the objection re-homed from {topics.objections}[{partition}]@{offset}")
            return None
        row = row_for(event, key, partition, rows)
        state = row.state
        updated = domain.apply_objection(state, objection, now_us())
        if updated is state:
            tally.duplicates += 1
        else:
            tally.add(metrics.OBJECTIONS, (objection.kind, objection.channel))
        if traced or objection.channel != Channel.IMPORT:
            # Live objections one line each (rare, and the audit trail); imports one line per batch.
            where = ids(user_id=objection.user_id, objection_id=objection.objection_id, topic=topics.objections, partition=partition, offset=offset)
            verb = "already applied (re-delivered)" if updated is state else "applied"
            log.info("%s %s %s", objection.kind, objection.objection_id, verb, extra=where)
        elif updated is not state:
            tally.imported += 1
        if traced:
            tracing.annotate(objection_id=objection.objection_id, user=user_ref(objection.user_id))
        # Written even when unchanged: after a crash the local store can hold a write whose
        # changelog record never left; re-delivery then re-asserts it for the readers.
        row.state = updated
        row.dirty = True
        return row

    async def on_notice(event, rows: dict, tally: Tally, traced: bool) -> Row | None:  # type: ignore[no-untyped-def]
        value, message = event.value, event.message
        partition, offset = message.partition, message.offset
        notice = parse_notice(value)
        if type(notice) is Invalid:
            await dead_letter(topics.notices, notice, event.key, partition, offset, value)
            return None
        key = notice.user_id.encode()
        home = home_partition(notice.user_id, partitions)
        if partition != home:
            # Like objections: the user's row lives in the changelog partition ingest loads for them.
            metrics.REPARTITIONED_NOTICES.inc()
            await send_acknowledged(notices, key, value, home, f"the notice re-homed from {topics.notices}[{partition}]@{offset}")
            return None
        row = row_for(event, key, partition, rows)
        state = row.state
        updated = domain.apply_notice(state, notice, now_us())
        if updated is state:
            tally.notice_duplicates += 1
        else:
            tally.add(metrics.NOTICES, (notice.channel,))
        row.state = updated  # re-asserted even when unchanged, as above
        row.dirty = True
        return row

    async def on_receipt(event, rows: dict, tally: Tally, traced: bool) -> Row | None:  # type: ignore[no-untyped-def]
        value, message = event.value, event.message
        receipt = parse_receipt(value)
        if type(receipt) is Invalid:
            await dead_letter(topics.receipts, receipt, event.key, message.partition, message.offset, value)
            return None
        key = receipt.user_id.encode()
        row = row_for(event, key, message.partition, rows)
        state = row.state
        updated = domain.apply_receipt(state, receipt, now_us())
        tally.add(metrics.RECEIPTS, (receipt.kind,))
        if traced:
            tracing.annotate(receipt=str(receipt.kind), objection_ids=",".join(receipt.objection_ids), user=user_ref(receipt.user_id))
        if updated is None:
            return row
        # Written even when unchanged, like objections: a re-delivered receipt re-asserts a
        # stamp whose changelog record may have died with the process that wrote RocksDB.
        row.state = updated
        row.dirty = True
        if updated is not state:
            _observe_latency(state, updated, receipt.kind)
        return row

    handlers = {topics.receipts: on_receipt, topics.notices: on_notice}

    async def apply_batch(events: list) -> None:  # type: ignore[type-arg]
        """Apply a batch of events in their order: each user's row is read once, every event's
        transition applied to it, and the row written once at the end (one changelog record per
        user and partition per batch). An event carrying a trace context is applied inside its
        span and its row written there at once, so the changelog record carries the context
        (ingest continues the objection's trace from it). Nothing here acknowledges an event."""
        rows: dict[tuple[bytes, int], Row] = {}
        tally = Tally()
        for event in events:
            message = event.message
            await failpoints.slow("consent.before_apply")  # holds an event in flight (tests only)
            try:
                handler = handlers.get(message.topic, on_objection)
                parent = tracing.context_from(event.headers)
                if parent is None:  # not a traced objection's record (posts' producers, imports)
                    await handler(event, rows, tally, False)
                else:
                    name = "consent.receipt" if message.topic == topics.receipts else "consent.apply"
                    with tracing.span(
                        name, parent, kind=SpanKind.CONSUMER,
                        **{"messaging.destination.name": message.topic, "messaging.destination.partition.id": str(message.partition),
                           "messaging.kafka.offset": message.offset},
                    ):
                        row = await handler(event, rows, tally, True)
                        if row is not None and row.dirty:
                            store(row)
            except Exception as exc:
                fail(exc, message)
        try:
            for row in rows.values():
                if row.dirty:
                    store(row)
            tally.publish(log)
        except Exception as exc:
            fail(exc, events[-1].message)

    def fail(exc: Exception, message) -> None:  # type: ignore[no-untyped-def]
        # A bug, not input: stop the process (raising would make faust commit the
        # offset and restart the agent), so the event is re-read after the restart.
        log.exception("consent agent failed at %s[%d]@%d", message.topic, message.partition, message.offset)
        failclosed.stop(f"applying {message.topic}[{message.partition}]@{message.offset} failed", exc)

    @app.agent(source, name=f"{settings.app_id}-agent")
    async def consent_agent(stream):  # type: ignore[no-untyped-def]
        # Events are taken as they come (stream.events(), faust's fastest path) and applied in
        # batches (services/consent/batching.py). faust acknowledges an event when
        # the loop moves on; here acks are off and the agent acknowledges a batch's events
        # itself, after their rows are written (so a commit, which flushes the changelog
        # first, never covers an event whose row is not in the producer).
        stream.enable_acks = False
        batcher = Batcher(stream, apply_batch, batching.BATCH_EVENTS, batching.BATCH_WINDOW_SECONDS)
        async with batcher.running():
            async for event in stream.events():
                await batcher.add(event)


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
