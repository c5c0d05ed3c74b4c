"""The consent agent: the `async for` loop and the table writes; decisions are in
consentry.domain.consent."""

from __future__ import annotations

import logging

import faust

from consentry.domain import consent as domain
from consentry.domain.model import ENFORCED, OBJECT, Channel, Invalid
from consentry.wire import decode_consent_state, encode_consent_state, parse_notice, parse_objection, parse_receipt
from consentry.partitioning import home_partition
from consentry.timeutil import now_us
from services.consent import metrics
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

    def load(key: bytes):  # type: ignore[no-untyped-def]
        raw = table.get(key)
        return decode_consent_state(raw) if raw is not None else None

    async def on_objection(value: bytes | None, partition: int, offset: int) -> None:
        event = parse_objection(value)
        if type(event) is Invalid:
            metrics.INVALID.labels("objections", event.code).inc()
            log.error("skipping objection at partition %d offset %d: %s", partition, offset, event.reason)
            return
        key = event.user_id.encode()
        home = home_partition(event.user_id, partitions)
        if partition != home:
            # Keep the table co-partitioned with ingest: move it to its user's home partition.
            metrics.REPARTITIONED.inc()
            await objections.send(key=key, value=value, partition=home)
            return
        state = load(key)
        updated = domain.apply_objection(state, event, now_us())
        if updated is state:
            metrics.DUPLICATES.inc()
        else:
            metrics.OBJECTIONS.labels(event.kind, event.channel).inc()
        # Written even when unchanged: after a crash the local store can hold a write whose
        # changelog record never left; re-delivery then re-asserts it for the readers.
        table[key] = encode_consent_state(updated)
        watch.on_write(state, updated)

    async def on_notice(value: bytes | None, partition: int, offset: int) -> None:
        notice = parse_notice(value)
        if type(notice) is Invalid:
            metrics.INVALID.labels("notices", notice.code).inc()
            log.error("skipping notice at partition %d offset %d: %s", partition, offset, notice.reason)
            return
        key = notice.user_id.encode()
        home = home_partition(notice.user_id, partitions)
        if partition != home:
            # Like objections: the user's row lives in the changelog partition ingest loads for them.
            metrics.REPARTITIONED_NOTICES.inc()
            await notices.send(key=key, value=value, partition=home)
            return
        state = load(key)
        updated = domain.apply_notice(state, notice, now_us())
        if updated is state:
            metrics.DUPLICATES_NOTICES.inc()
        else:
            metrics.NOTICES.labels(notice.channel).inc()
        table[key] = encode_consent_state(updated)  # re-asserted even when unchanged, as above
        watch.on_write(state, updated)

    def on_receipt(value: bytes | None, partition: int, offset: int) -> None:
        receipt = parse_receipt(value)
        if type(receipt) is Invalid:
            metrics.INVALID.labels("receipts", receipt.code).inc()
            log.error("skipping receipt at partition %d offset %d: %s", partition, offset, receipt.reason)
            return
        key = receipt.user_id.encode()
        state = load(key)
        updated = domain.apply_receipt(state, receipt, now_us())
        metrics.RECEIPTS.labels(receipt.kind).inc()
        if updated is None:
            return
        # Written even when unchanged, like objections: a re-delivered receipt re-asserts a
        # stamp whose changelog record may have died with the process that wrote RocksDB.
        table[key] = encode_consent_state(updated)
        watch.on_write(state, updated)
        if updated is not state:
            _observe_latency(state, updated, receipt.kind)

    @app.agent(source, name=f"{settings.app_id}-agent")
    async def consent_agent(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            message = event.message
            try:
                if message.topic == topics.receipts:
                    on_receipt(event.value, message.partition, message.offset)
                elif message.topic == topics.notices:
                    await on_notice(event.value, message.partition, message.offset)
                else:
                    await on_objection(event.value, message.partition, message.offset)
            except Exception:
                # A bug, not input: fail loudly. The offset is not committed, so the
                # event is re-read after the restart.
                log.exception("consent agent failed at %s[%d]@%d", message.topic, message.partition, message.offset)
                raise


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
