"""`/v1/objections`: a person files, checks and withdraws their own objection."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, HTTPException, status
from fastapi.responses import JSONResponse

from consentry.domain.model import OBJECT, WITHDRAW, Channel, ObjectionEvent, Status
from consentry.timeutil import format_rfc3339
from consentry.wire import status_to_dict
from services.gateway.api.schemas import CONFLICT, STATUS_UNAVAILABLE, UNAVAILABLE, ObjectionReceipt, ObjectionRequest, ObjectionStatus
from services.gateway.consent_client import ConsentUnavailable
from services.gateway.deps import AddressLimit, CurrentUser, FilingDep
from services.gateway.filing import FilingRefused, FilingUnavailable, Superseded, file_event, status_for
from services.gateway.problems import INVALID, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED, UNREADABLE

router = APIRouter(prefix="/v1/objections", tags=["objections"], dependencies=[AddressLimit])

COMMON = {401: UNAUTHORIZED, 429: RATE_LIMITED}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Re-sending with the same key returns the same receipt (same objection_id and received_at), "
        "from any gateway replica, as long as nothing else happened to your objection since; after a later "
        "request (a withdrawal after this objection, say) the repeat is answered 409 with your current status.",
        examples=["2f0c6a4e-objection-from-settings-page"],
    ),
]


def receipt_of(event: ObjectionEvent) -> ObjectionReceipt:
    return ObjectionReceipt(
        objection_id=event.objection_id, user_id=event.user_id, status=Status.RECEIVED, received_at=format_rfc3339(event.received_at_us)
    )


def refused(exc: FilingRefused) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"the objection cannot be recorded: {exc.invalid.reason}")


def conflict(exc: Superseded) -> JSONResponse:
    return JSONResponse(
        {"detail": f"this Idempotency-Key was used for an earlier request, and a later one changed your objection since: "
                   f"it is now '{exc.status.status}'; send a new request without this key", "status": status_to_dict(exc.status)},
        status_code=status.HTTP_409_CONFLICT,
    )


def unavailable(exc: Exception) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "the objection could not be confirmed right now (event store unavailable); please retry, with the same Idempotency-Key if you sent one: a retry is never counted twice",
        headers={"Retry-After": "5"},
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ObjectionReceipt,
    summary="Object to the use of my posts for AI training",
    description="Answers 202 only once the objection is durably recorded. Every stored post of yours is then "
    "purged from the training store and none is added later; watch the progress at `GET /v1/objections/me`. "
    "A repeated `Idempotency-Key` returns the original receipt while nothing else happened to your objection "
    "since, and 409 with your current status once a later request (a withdrawal, say) changed it.",
    responses={**COMMON, 400: UNREADABLE, 409: CONFLICT, 413: TOO_LARGE, 422: INVALID, 503: UNAVAILABLE},
)
async def create_objection(
    user: CurrentUser,
    filing: FilingDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[ObjectionRequest | None, Body()] = None,
) -> ObjectionReceipt:
    body = body or ObjectionRequest()
    try:
        event = await file_event(
            OBJECT, user.user_id, body.channel, body.reason, body.notice_version, idempotency_key,
            filing.publisher, filing.receipts, filing.consent,
        )
    except FilingUnavailable as exc:
        raise unavailable(exc) from exc
    except FilingRefused as exc:
        raise refused(exc) from exc
    except Superseded as exc:
        return conflict(exc)
    return receipt_of(event)


@router.delete(
    "/me",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ObjectionReceipt,
    summary="Withdraw my objection (posts written from now on may be used again)",
    description="Posts created while the objection was active stay out of training for good. A repeated "
    "`Idempotency-Key` is answered 409 with your current status once a later request changed your objection.",
    responses={**COMMON, 409: CONFLICT, 422: INVALID, 503: UNAVAILABLE},
)
async def withdraw_objection(user: CurrentUser, filing: FilingDep, idempotency_key: IdempotencyKey = None) -> ObjectionReceipt:
    try:
        event = await file_event(
            WITHDRAW, user.user_id, Channel.API, None, None, idempotency_key, filing.publisher, filing.receipts, filing.consent
        )
    except FilingUnavailable as exc:
        raise unavailable(exc) from exc
    except FilingRefused as exc:
        raise refused(exc) from exc
    except Superseded as exc:
        return conflict(exc)
    return receipt_of(event)


@router.get(
    "/me",
    response_model=ObjectionStatus,
    summary="My objection status and history",
    description="Only ever the caller's own: the user is the token's subject. Each objection shows when it was "
    "received, enforced and purged, and how many stored posts the purge removed.",
    responses={**COMMON, 503: STATUS_UNAVAILABLE},
)
async def my_status(user: CurrentUser, filing: FilingDep) -> dict:
    try:
        return status_to_dict(await status_for(user.user_id, filing.consent, filing.receipts))
    except ConsentUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "objection status is temporarily unavailable, please retry") from exc
