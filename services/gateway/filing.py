"""Filing objection events and reading a person's status: shared by the API
(`routers/objections.py`) and the one-click page (`routers/object_page.py`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from consentry.domain.consent import RECEIVED, WITHDRAWN
from consentry.events import OBJECT, ObjectionEvent, objection_to_dict
from consentry.timeutil import now_us, parse_rfc3339
from services.gateway import metrics
from services.gateway.consent_client import ConsentClient, ConsentUnavailable
from services.gateway.publisher import ObjectionPublisher, PublishUnavailable
from services.gateway.receipts import ReceiptCache, objection_id_for

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 1.0


class FilingUnavailable(Exception):
    """The broker did not acknowledge: nothing was recorded, the caller must not answer 202."""


def find_recorded(document: dict[str, Any], objection_id: str) -> ObjectionEvent | None:
    """The event as the consent table recorded it (with its original received_at), if there."""
    for item in document.get("history", ()):
        if item.get("objection_id") == objection_id:
            received = parse_rfc3339(item.get("received_at") or "")
            if received is None:
                return None
            return ObjectionEvent(
                objection_id, document["user_id"], item["kind"], received, item["channel"], item.get("reason"), item.get("notice_version")
            )
    return None


async def _recorded_elsewhere(consent: ConsentClient, user_id: str, objection_id: str) -> ObjectionEvent | None:
    """Another gateway replica may have filed this idempotent request first."""
    try:
        document = await asyncio.wait_for(consent.state(user_id), timeout=LOOKUP_TIMEOUT_S)
    except (ConsentUnavailable, TimeoutError):
        # Publishing again is safe: the id is deterministic and recorded once.
        return None
    return find_recorded(document, objection_id)


async def file_event(
    kind: str,
    user_id: str,
    channel: str,
    reason: str | None,
    notice_version: str | None,
    idempotency_key: str | None,
    publisher: ObjectionPublisher,
    receipts: ReceiptCache,
    consent: ConsentClient,
) -> ObjectionEvent:
    """Publish one objection event; returns once the broker acknowledged it. A repeated
    Idempotency-Key returns the event first filed, from this replica's receipts or, when
    another replica served it, from the consent state."""
    objection_id = objection_id_for(user_id, idempotency_key and f"{kind}:{idempotency_key}")
    event = receipts.get(objection_id)
    if event is None and idempotency_key:
        event = await _recorded_elsewhere(consent, user_id, objection_id)
        if event is not None:
            receipts.remember(event)
    if event is not None:
        metrics.IDEMPOTENT_REPLAYS.inc()
        return event
    event = ObjectionEvent(objection_id, user_id, kind, now_us(), channel, reason, notice_version)
    try:
        await publisher.publish(event)
    except PublishUnavailable as exc:
        metrics.PUBLISH_FAILURES.inc()
        raise FilingUnavailable(str(exc)) from exc
    receipts.remember(event)
    metrics.OBJECTIONS.labels(kind, channel).inc()
    return event


def merge_late(document: dict[str, Any], late: list[ObjectionEvent]) -> dict[str, Any]:
    """Add events this gateway acknowledged that the consent table has not applied yet."""
    known = {item["objection_id"] for item in document["history"]}
    missing = [e for e in late if e.objection_id not in known]
    if not missing:
        return document
    history = document["history"] + [objection_to_dict(e) for e in missing]
    history.sort(key=lambda item: parse_rfc3339(item["received_at"]) or 0)
    latest = history[-1]
    if latest["objection_id"] in known:
        return {**document, "history": history}
    objecting = latest["kind"] == OBJECT
    return {**document, "history": history, "objected": objecting, "status": RECEIVED if objecting else WITHDRAWN}


async def status_for(user_id: str, consent: ConsentClient, receipts: ReceiptCache) -> dict[str, Any]:
    """The `GET /v1/objections/me` document. Raises ConsentUnavailable."""
    document = await consent.state(user_id)
    return merge_late(document, receipts.for_user(user_id))
