"""`/v1/admin`: operators' bulk import of historical objections."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, status

from consentry.importer import ImportFailed, import_lines, split_lines
from consentry.timeutil import now_us
from services.gateway import metrics
from services.gateway.deps import AddressLimit, AdminUser, PublisherDep
from services.gateway.schemas import FORBIDDEN, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED, ImportResult, problem

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AddressLimit])
log = logging.getLogger(__name__)

IMPORT_PATH = "/v1/admin/objections:import"
EXAMPLE_BODY = (
    '{"objection_id": "legacy-1", "user_id": "u-42", "kind": "object", "received_at": "2023-03-01T09:30:00Z", "channel": "email"}\n'
    '{"objection_id": "legacy-2", "user_id": "u-43", "kind": "object", "received_at": "2023-04-11T17:02:00Z"}\n'
)


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
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}, "example": EXAMPLE_BODY}},
        }
    },
    responses={
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
    },
)
async def import_objections(admin: AdminUser, request: Request, publisher: PublisherDep) -> ImportResult:
    try:
        report = await import_lines(publisher.publish_many, split_lines(request.stream()), now_us())
    except ImportFailed as exc:
        log.error("import by %s stopped: %s", admin.user_id, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"import stopped at line {exc.report.lines}: the broker did not acknowledge; importing the same body again is safe",
            headers={"Retry-After": "5"},
        ) from exc
    metrics.IMPORTED.labels("accepted").inc(report.accepted)
    metrics.IMPORTED.labels("duplicate").inc(report.duplicates)
    metrics.IMPORTED.labels("rejected").inc(report.rejected_count)
    log.info(
        "import by %s: %d lines, %d accepted, %d duplicates, %d rejected",
        admin.user_id, report.lines, report.accepted, report.duplicates, report.rejected_count,
    )
    return ImportResult.model_validate(report.as_dict())
