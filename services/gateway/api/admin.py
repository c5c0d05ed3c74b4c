"""`/v1/admin`: operators' bulk imports of historical objections and of notices.

Every action is recorded on the admin actions topic (`consentry.admin-actions`, kept for
ever): a `started` record before anything is published (if the broker cannot take it, the
action is refused and nothing is imported), then a `completed` or `stopped` one with the
counts. Who: the token's subject; when; what: the action, its options and counts.

Imported withdrawals are the dangerous lines: a `withdraw` dated after a person's own (live)
objection would end that objection in the past and re-open their posts, including those
written while it stood. So a `withdraw` line needs the `consentry:import-withdrawals` scope,
and one that would shorten an objection a person filed themselves, or that is dated within the
last hour (a live objection the consent table has not applied yet may precede it), is refused
unless the request says `override_live_objections=true`; each such override is listed in the
action's record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, status

from consentry.domain.consent import acknowledged_at, apply_objection, with_acknowledged
from consentry.domain.model import OBJECT, WITHDRAW, Channel, Invalid, ObjectionEvent
from consentry.importer import NOTICES, OBJECTIONS, Importable, ImportFailed, ImportReport, import_lines, split_lines
from consentry.timeutil import format_rfc3339, now_us
from services.gateway import metrics
from services.gateway.api.schemas import ImportResult
from services.gateway.auth import IMPORT_WITHDRAWALS_SCOPE, Principal
from services.gateway.consent_client import ConsentClient, ConsentUnavailable
from services.gateway.deps import AddressLimit, AdminUser, FilingDep
from services.gateway.problems import FORBIDDEN, INVALID, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED, problem
from services.gateway.publisher import ObjectionPublisher, PublishUnavailable
from services.gateway.receipts import ReceiptCache

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AddressLimit])
log = logging.getLogger(__name__)

IMPORT_PATH = "/v1/admin/objections:import"
NOTICES_IMPORT_PATH = "/v1/admin/notices:import"
RECENT_US = 3600 * 1_000_000  # imported withdrawals dated within the last hour need the override
MAX_LISTED_OVERRIDES = 1000
EXAMPLE_BODY = (
    '{"objection_id": "legacy-1", "user_id": "u-42", "kind": "object", "received_at": "2023-03-01T09:30:00Z", "channel": "email"}\n'
    '{"objection_id": "legacy-2", "user_id": "u-43", "kind": "object", "received_at": "2023-04-11T17:02:00Z"}\n'
)
NOTICES_EXAMPLE_BODY = (
    '{"notice_id": "n-1", "user_id": "u-42", "notice_version": "2025-05", "channel": "email", "sent_at": "2025-05-01T09:00:00Z", "country": "FR"}\n'
    '{"notice_id": "n-2", "user_id": "u-43", "notice_version": "2025-05", "channel": "in_app", "sent_at": "2025-05-02T18:30:00Z", "country": "DE"}\n'
)
OverrideLiveObjections = Annotated[
    bool,
    Query(
        description="Accept imported withdrawals that would end an objection a person filed themselves (or dated within "
        "the last hour). Needs the `consentry:import-withdrawals` scope; every such line is listed in the admin action record."
    ),
]


def _responses() -> dict[int | str, dict[str, Any]]:
    return {
        401: UNAUTHORIZED,
        403: FORBIDDEN,
        413: TOO_LARGE,
        422: INVALID,
        429: RATE_LIMITED,
        503: {
            **problem(
                "Publishing stopped, or the action could not be recorded (then nothing was imported): some lines may be "
                "recorded, none is lost by importing again.",
                "import stopped at line 40000: the broker did not acknowledge; importing the same body again is safe",
            ),
            "headers": {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
        },
    }


def _body(example: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {"type": "string"}, "example": example}}}}


class WithdrawalScreen:
    """Decides each imported `withdraw` (see the module's docstring); counts what it decided."""

    def __init__(self, admin: Principal, override: bool, consent: ConsentClient, receipts: ReceiptCache, now: int) -> None:
        self.allowed = admin.has(IMPORT_WITHDRAWALS_SCOPE)
        self.override = override and self.allowed
        self.consent, self.receipts, self.now = consent, receipts, now
        self.accepted = self.refused = self.overridden = 0
        self.overrides: list[dict[str, str]] = []

    async def __call__(self, event: ObjectionEvent) -> Invalid | None:
        if event.kind != WITHDRAW:
            return None
        if not self.allowed:
            self.refused += 1
            metrics.IMPORTED_WITHDRAWALS.labels("refused").inc()
            return Invalid("needs_scope", f"importing a withdrawal needs the {IMPORT_WITHDRAWALS_SCOPE} scope")
        conflict = await self.rewrites_live_history(event)
        if conflict is not None:
            if not self.override:
                self.refused += 1
                metrics.IMPORTED_WITHDRAWALS.labels("refused").inc()
                return Invalid("after_live_objection", conflict)
            self.overridden += 1
            metrics.IMPORTED_WITHDRAWALS.labels("override").inc()
            if len(self.overrides) < MAX_LISTED_OVERRIDES:
                self.overrides.append({"objection_id": event.objection_id, "user_id": event.user_id, "reason": conflict})
        self.accepted += 1
        metrics.IMPORTED_WITHDRAWALS.labels("accepted").inc()
        return None

    async def rewrites_live_history(self, event: ObjectionEvent) -> str | None:
        """Why importing this withdrawal would change what a person's own objection covers
        (None: it would not). Raises ConsentUnavailable: without the state nothing is decided."""
        state = with_acknowledged(event.user_id, await self.consent.state(event.user_id), self.receipts.for_user(event.user_id), self.now)
        effective = acknowledged_at(state, event)
        if effective > self.now - RECENT_US:
            return (
                f"it takes effect at {format_rfc3339(effective)}, within the last hour: an objection the person filed "
                "moments ago may not be applied yet; file recent withdrawals through DELETE /v1/objections/me"
            )
        if state is None:
            return None
        live = [e for e in state.history if e.kind == OBJECT and e.channel != Channel.IMPORT and e.received_at_us <= effective]
        if not live or apply_objection(state, event, self.now).intervals == state.intervals:
            return None
        own = live[-1]
        return (
            f"it would end, as of {format_rfc3339(effective)}, the objection {own.objection_id} the person filed themselves "
            f"({own.channel}, {format_rfc3339(own.received_at_us)}) and re-open their posts written since"
        )


class AdminAction:
    """The audit records of one action: `started`, then `completed` or `stopped`."""

    def __init__(self, name: str, admin: Principal, request: Request, publisher: ObjectionPublisher, options: dict[str, Any]) -> None:
        self.id = str(uuid.uuid4())
        self.name, self.admin, self.publisher, self.options = name, admin, publisher, options
        self.client = request.client.host if request.client else None
        self.started_at = now_us()

    def record(self, phase: str, **fields: Any) -> bytes:
        return orjson.dumps({
            "action_id": self.id,
            "action": self.name,
            "phase": phase,
            "actor": self.admin.user_id,
            "scopes": sorted(self.admin.scopes),
            "client": self.client,
            "started_at": format_rfc3339(self.started_at),
            "at": format_rfc3339(now_us()),
            "options": self.options,
            **fields,
        })

    async def start(self) -> None:
        try:
            await self.publisher.record_admin_action(self.admin.user_id, self.record("started"))
        except PublishUnavailable as exc:
            metrics.ADMIN_RECORD_FAILURES.inc()
            metrics.ADMIN_ACTIONS.labels(self.name, "refused").inc()
            log.error("%s by %s refused: its admin action record was not acknowledged (%s)", self.name, self.admin.user_id, exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the action could not be recorded in the admin actions trail, so nothing was imported; retry shortly",
                headers={"Retry-After": "5"},
            ) from exc

    async def finish(self, phase: str, **fields: Any) -> None:
        metrics.ADMIN_ACTIONS.labels(self.name, phase).inc()
        try:
            await self.publisher.record_admin_action(self.admin.user_id, self.record(phase, **fields))
        except PublishUnavailable as exc:
            # The action happened and its `started` record is in the trail: answer the operator
            # truthfully, and alert (ConsentryAdminActionNotRecorded).
            metrics.ADMIN_RECORD_FAILURES.inc()
            log.error("the %s record of %s %s by %s was not acknowledged (%s)", phase, self.name, self.id, self.admin.user_id, exc)


def _counts(report: ImportReport, screen: WithdrawalScreen | None) -> dict[str, int]:
    counts = {"lines": report.lines, "accepted": report.accepted, "duplicates": report.duplicates, "rejected": report.rejected_count}
    if screen is not None:
        counts |= {"withdrawals_accepted": screen.accepted, "withdrawals_refused": screen.refused, "live_objection_overrides": screen.overridden}
    return counts


async def _import(
    kind: Importable,
    action: AdminAction,
    request: Request,
    publish: Callable[[Sequence[Any]], Awaitable[None]],
    screen: WithdrawalScreen | None = None,
) -> ImportResult:
    admin = action.admin
    await action.start()
    overrides = (lambda: {"overrides": screen.overrides}) if screen is not None else dict
    try:
        report = await import_lines(publish, split_lines(request.stream()), now_us(), kind=kind, screen=screen)
    except ImportFailed as exc:
        log.error("import of %s by %s stopped: %s", kind.name, admin.user_id, exc)
        await action.finish("stopped", counts=_counts(exc.report, screen), detail="the broker did not acknowledge", **overrides())
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"import stopped at line {exc.report.lines}: the broker did not acknowledge; importing the same body again is safe",
            headers={"Retry-After": "5"},
        ) from exc
    except ConsentUnavailable as exc:
        metrics.CONSENT_LOOKUP_FAILURES.inc()
        log.error("import of %s by %s stopped: cannot check an imported withdrawal (%s)", kind.name, admin.user_id, exc)
        await action.finish("stopped", detail="the consent state could not be read to check a withdrawal", **overrides())
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "import stopped at a withdrawal: the consent state could not be read to check it against the person's own "
            "objections; the lines before it may be recorded, importing the same body again is safe",
            headers={"Retry-After": "5"},
        ) from exc
    metrics.IMPORTED.labels(kind.name, "accepted").inc(report.accepted)
    metrics.IMPORTED.labels(kind.name, "duplicate").inc(report.duplicates)
    metrics.IMPORTED.labels(kind.name, "rejected").inc(report.rejected_count)
    log.info(
        "import of %s by %s: %d lines, %d accepted, %d duplicates, %d rejected",
        kind.name, admin.user_id, report.lines, report.accepted, report.duplicates, report.rejected_count,
    )
    await action.finish("completed", counts=_counts(report, screen), **overrides())
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
        "new ones. Importing the same body again is harmless. Needs `consentry:admin`; a `withdraw` line also "
        "needs `consentry:import-withdrawals`, and is refused when it would end an objection the person filed "
        "themselves (or is dated within the last hour) unless `override_live_objections=true`. The action, "
        "who did it and its counts are recorded on the admin actions topic."
    ),
    openapi_extra=_body(EXAMPLE_BODY),
    responses=_responses(),
)
async def import_objections(
    admin: AdminUser, request: Request, filing: FilingDep, override_live_objections: OverrideLiveObjections = False
) -> ImportResult:
    action = AdminAction("import_objections", admin, request, filing.publisher, {"override_live_objections": override_live_objections})
    screen = WithdrawalScreen(admin, override_live_objections, filing.consent, filing.receipts, now_us())
    return await _import(OBJECTIONS, action, request, filing.publisher.publish_many, screen)


@router.post(
    "/notices:import",
    response_model=ImportResult,
    summary="Import notices already sent (JSON Lines)",
    description=(
        "One notice per line, as on the `notices` topic, with its original `sent_at`. Streamed and validated "
        "line by line like the objections import; lines repeating an earlier `notice_id` are skipped. Answers "
        "once every accepted line is acknowledged by the broker. A user's grace period runs from their first "
        "notice's `sent_at`, so posts deferred for want of a notice may be released as soon as it is recorded. "
        "Importing the same body again is harmless. Needs `consentry:admin`; recorded on the admin actions topic."
    ),
    openapi_extra=_body(NOTICES_EXAMPLE_BODY),
    responses=_responses(),
)
async def import_notices(admin: AdminUser, request: Request, filing: FilingDep) -> ImportResult:
    action = AdminAction("import_notices", admin, request, filing.publisher, {})
    return await _import(NOTICES, action, request, filing.publisher.publish_notices)
