"""`/v1/objections`: a person files, checks and withdraws their own objection."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, HTTPException, status

from consentry.domain.consent import RECEIVED
from consentry.events import OBJECT, WITHDRAW, ObjectionEvent, objection_to_dict
from consentry.timeutil import format_rfc3339, now_us, parse_rfc3339
from services.gateway import metrics
from services.gateway.consent_client import ConsentUnavailable
from services.gateway.deps import ConsentDep, CurrentUser, PublisherDep, ReceiptsDep
from services.gateway.publisher import PublishUnavailable
from services.gateway.receipts import objection_id_for
from services.gateway.schemas import ObjectionReceipt, ObjectionRequest, ObjectionStatus, Problem

router = APIRouter(prefix="/v1/objections", tags=["objections"])

UNAVAILABLE = {"model": Problem, "description": "The broker did not acknowledge the event in time: it is not confirmed, retry (with the same Idempotency-Key a retry never counts twice)."}
AUTH = {401: {"model": Problem, "description": "Missing, invalid or expired token."}}
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, description="Re-sending with the same key returns the same receipt."),
]


async def file_event(
    kind: str, user_id: str, channel: str, reason: str | None, notice_version: str | None,
    idempotency_key: str | None, publisher: PublisherDep, receipts: ReceiptsDep,
) -> ObjectionReceipt:
    """Publish one objection event and answer only once the broker acknowledged it."""
    objection_id = objection_id_for(user_id, idempotency_key and f"{kind}:{idempotency_key}")
    event = receipts.get(objection_id)
    if event is None:
        event = ObjectionEvent(objection_id, user_id, kind, now_us(), channel, reason, notice_version)
        try:
            await publisher.publish(event)
        except PublishUnavailable as exc:
            metrics.PUBLISH_FAILURES.inc()
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the objection could not be confirmed right now (event store unavailable); please retry, "
                "with the same Idempotency-Key if you sent one: a retry is never counted twice",
                headers={"Retry-After": "5"},
            ) from exc
        receipts.remember(event)
        metrics.OBJECTIONS.labels(kind, channel).inc()
    return ObjectionReceipt(
        objection_id=event.objection_id, user_id=user_id, status=RECEIVED, received_at=format_rfc3339(event.received_at_us)
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ObjectionReceipt,
    summary="Object to the use of my posts for AI training",
    responses={**AUTH, 422: {"description": "Malformed body."}, 503: UNAVAILABLE},
)
async def create_objection(
    user: CurrentUser,
    publisher: PublisherDep,
    receipts: ReceiptsDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[ObjectionRequest | None, Body()] = None,
) -> ObjectionReceipt:
    body = body or ObjectionRequest()
    return await file_event(OBJECT, user.user_id, body.channel, body.reason, body.notice_version, idempotency_key, publisher, receipts)


@router.delete(
    "/me",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ObjectionReceipt,
    summary="Withdraw my objection (posts written from now on may be used again)",
    responses={**AUTH, 503: UNAVAILABLE},
)
async def withdraw_objection(
    user: CurrentUser, publisher: PublisherDep, receipts: ReceiptsDep, idempotency_key: IdempotencyKey = None
) -> ObjectionReceipt:
    return await file_event(WITHDRAW, user.user_id, "api", None, None, idempotency_key, publisher, receipts)


@router.get(
    "/me",
    response_model=ObjectionStatus,
    summary="My objection status and history",
    responses={**AUTH, 503: {"model": Problem, "description": "Consent state temporarily unavailable."}},
)
async def my_status(user: CurrentUser, consent: ConsentDep, receipts: ReceiptsDep) -> dict:
    try:
        document = await consent.state(user.user_id)
    except ConsentUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "objection status is temporarily unavailable, please retry") from exc
    known = {item["objection_id"] for item in document["history"]}
    # Events this gateway acknowledged that the consent table has not applied yet.
    late = [e for e in receipts.for_user(user.user_id) if e.objection_id not in known]
    if not late:
        return document
    history = document["history"] + [objection_to_dict(e) for e in late]
    history.sort(key=lambda item: parse_rfc3339(item["received_at"]) or 0)
    latest = history[-1]
    if latest["objection_id"] in known:
        return {**document, "history": history}
    objecting = latest["kind"] == OBJECT
    return {**document, "history": history, "objected": objecting, "status": RECEIVED if objecting else "withdrawn"}
