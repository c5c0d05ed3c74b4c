"""Filing objection events and reading a person's status: shared by the API
(`api/objections.py`) and the one-click page (`pages/router.py`)."""

from __future__ import annotations

import asyncio
import logging

from consentry.domain.consent import recorded_event, user_status, was_folded, with_acknowledged
from consentry.domain.model import ConsentState, Invalid, ObjectionEvent, UserStatus
from consentry.timeutil import now_us
from consentry.wire import check_objection
from services.gateway import metrics
from services.gateway.consent_client import ConsentClient, ConsentUnavailable
from services.gateway.publisher import ObjectionPublisher, PublishUnavailable
from services.gateway.receipts import ReceiptCache, objection_id_for

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 1.0


class FilingUnavailable(Exception):
    """The broker did not acknowledge, or a repeated request could not be checked against the
    consent state: nothing was recorded, the caller must not answer 202."""


class FilingRefused(Exception):
    """The event would not pass the validator every reader applies: answer 422, never 202."""

    def __init__(self, invalid: Invalid) -> None:
        super().__init__(invalid.reason)
        self.invalid = invalid


class Superseded(Exception):
    """A repeated Idempotency-Key whose event is no longer the user's latest: replaying the old
    receipt would claim a state that no longer holds. Carries the current status (409)."""

    def __init__(self, status: UserStatus) -> None:
        super().__init__(f"a later request changed this user's objection (now {status.status})")
        self.status = status


async def _current_state(consent: ConsentClient, user_id: str) -> ConsentState | None:
    try:
        return await asyncio.wait_for(consent.state(user_id), timeout=LOOKUP_TIMEOUT_S)
    except TimeoutError as exc:
        raise ConsentUnavailable("consent service did not answer in time") from exc


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
    """Publish one objection event; returns once the broker acknowledged it.

    A repeated Idempotency-Key returns the event first filed (from this replica's receipts or,
    when another replica served it, from the consent state) only while nothing else happened to
    the user since; otherwise raises Superseded. Raises FilingRefused for an event the consent
    service would refuse and FilingUnavailable when nothing was recorded."""
    objection_id = objection_id_for(user_id, idempotency_key and f"{kind}:{idempotency_key}")
    if idempotency_key:
        try:
            state = await _current_state(consent, user_id)
        except ConsentUnavailable as exc:
            # Without the state a replay cannot be told from a superseded one: fail closed.
            metrics.CONSENT_LOOKUP_FAILURES.inc()
            raise FilingUnavailable(f"cannot check the repeated request: {exc}") from exc
        merged = with_acknowledged(user_id, state, receipts.for_user(user_id), now_us())
        event = receipts.get(objection_id) or recorded_event(merged, objection_id)
        if event is None and was_folded(merged, objection_id):
            # Known but folded out of the row (never the latest event): filing it again would
            # be taken for a re-delivery and never applied.
            metrics.IDEMPOTENT_CONFLICTS.inc()
            raise Superseded(user_status(user_id, merged, now_us()))
        if event is not None:
            if merged is not None and merged.history and merged.history[-1].objection_id != objection_id:
                metrics.IDEMPOTENT_CONFLICTS.inc()
                raise Superseded(user_status(user_id, merged, now_us()))
            receipts.remember(event)
            metrics.IDEMPOTENT_REPLAYS.inc()
            return event
    event = ObjectionEvent(objection_id, user_id, kind, now_us(), channel, reason, notice_version)
    invalid = check_objection(event)
    if invalid is not None:
        metrics.REFUSED.labels(invalid.code).inc()
        raise FilingRefused(invalid)
    try:
        await publisher.publish(event)
    except PublishUnavailable as exc:
        metrics.PUBLISH_FAILURES.inc()
        raise FilingUnavailable(str(exc)) from exc
    receipts.remember(event)
    metrics.OBJECTIONS.labels(kind, channel).inc()
    return event


async def status_for(user_id: str, consent: ConsentClient, receipts: ReceiptCache) -> UserStatus:
    """What `GET /v1/objections/me` shows: the consent table's row with the events this gateway
    acknowledged and the table has not applied yet. Raises ConsentUnavailable."""
    state = await consent.state(user_id)
    now = now_us()
    return user_status(user_id, with_acknowledged(user_id, state, receipts.for_user(user_id), now), now)
