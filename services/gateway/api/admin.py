"""`/v1/admin`: operators' bulk imports of historical objections and of notices."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from consentry.importer import NOTICES, OBJECTIONS, Importable, ImportFailed, import_lines, split_lines
from consentry.timeutil import now_us
from services.gateway import metrics
from services.gateway.deps import AddressLimit, AdminUser, PublisherDep
from services.gateway.api.schemas import ImportResult
from services.gateway.problems import FORBIDDEN, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED, problem

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AddressLimit])
log = logging.getLogger(__name__)

IMPORT_PATH = "/v1/admin/objections:import"
NOTICES_IMPORT_PATH = "/v1/admin/notices:import"
EXAMPLE_BODY = (
    '{"objection_id": "legacy-1", "user_id": "u-42", "kind": "object", "received_at": "2023-03-01T09:30:00Z", "channel": "email"}\n'
    '{"objection_id": "legacy-2", "user_id": "u-43", "kind": "object", "received_at": "2023-04-11T17:02:00Z"}\n'
)
NOTICES_EXAMPLE_BODY = (
    '{"notice_id": "n-1", "user_id": "u-42", "notice_version": "2025-05", "channel": "email", "sent_at": "2025-05-01T09:00:00Z", "country": "FR"}\n'
    '{"notice_id": "n-2", "user_id": "u-43", "notice_version": "2025-05", "channel": "in_app", "sent_at": "2025-05-02T18:30:00Z", "country": "DE"}\n'
)


def _responses() -> dict[int | str, dict[str, Any]]:
    return {
        401: UNAUTHORIZED,
        403: FORBIDDEN,
        413: TOO_LARGE,
        429: RATE_LIMITED,
        503: {
            **problem(
                "Publishing stopped: some lines may be recorded, none is lost by importing again.",
                "import stopped at line 40000: the broker did not acknowledge; importing the same body again is safe",
            ),
            "headers": {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
        },
    }


def _body(example: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {"type": "string"}, "example": example}}}}


async def _import(kind: Importable, admin: AdminUser, request: Request, publish: Callable[[Sequence[Any]], Awaitable[None]]) -> ImportResult:
    try:
        report = await import_lines(publish, split_lines(request.stream()), now_us(), kind=kind)
    except ImportFailed as exc:
        log.error("import of %s by %s stopped: %s", kind.name, admin.user_id, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"import stopped at line {exc.report.lines}: the broker did not acknowledge; importing the same body again is safe",
            headers={"Retry-After": "5"},
        ) from exc
    metrics.IMPORTED.labels(kind.name, "accepted").inc(report.accepted)
    metrics.IMPORTED.labels(kind.name, "duplicate").inc(report.duplicates)
    metrics.IMPORTED.labels(kind.name, "rejected").inc(report.rejected_count)
    log.info(
        "import of %s by %s: %d lines, %d accepted, %d duplicates, %d rejected",
        kind.name, admin.user_id, report.lines, report.accepted, report.duplicates, report.rejected_count,
    )
    return ImportResult.model_validate(report.as_dict())


@router.post(
    "/objections:import",
    response_model=ImportResult,
    summary="Import historical objections (JSON Lines)",
    description=(
        "One objection event per line, with its original `received_at` (`channel` defaults to `import`). "
        "The body is streamed, never held whole in memory. Each line is validated; bad lines are reported "
        "with their number and reason, lines repeating an earlier `objection_id` are skipped. Answers once "
        "every accepted line is acknowledged by the broker. Imported objections count and purge exactly like "
        "new ones. Importing the same body again is harmless."
    ),
    openapi_extra=_body(EXAMPLE_BODY),
    responses=_responses(),
)
async def import_objections(admin: AdminUser, request: Request, publisher: PublisherDep) -> ImportResult:
    return await _import(OBJECTIONS, admin, request, publisher.publish_many)


@router.post(
    "/notices:import",
    response_model=ImportResult,
    summary="Import notices already sent (JSON Lines)",
    description=(
        "One notice per line, as on the `notices` topic, with its original `sent_at`. Streamed and validated "
        "line by line like the objections import; lines repeating an earlier `notice_id` are skipped. Answers "
        "once every accepted line is acknowledged by the broker. A user's grace period runs from their first "
        "notice's `sent_at`, so posts deferred for want of a notice may be released as soon as it is recorded. "
        "Importing the same body again is harmless."
    ),
    openapi_extra=_body(NOTICES_EXAMPLE_BODY),
    responses=_responses(),
)
async def import_notices(admin: AdminUser, request: Request, publisher: PublisherDep) -> ImportResult:
    return await _import(NOTICES, admin, request, publisher.publish_notices)
