"""`GET /v1/admin/audit/{user_id}`: one person's evidence from the audit table (services/audit):
every step in chain order with its time and proof, and the training runs that read their rows."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, status

from consentry.audit import AuditTable, evidence
from consentry.domain.audit import RUN_READ, TABLE_KEY
from services.gateway.api.path_ids import require_canonical
from services.gateway.deps import AddressLimit, AdminUser, SettingsDep
from services.gateway.problems import FORBIDDEN, RATE_LIMITED, UNAUTHORIZED, problem
from services.gateway.settings import audit_table_uri

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AddressLimit])
log = logging.getLogger(__name__)


def _read(uri: str, user_id: str) -> dict[str, Any]:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri):
        raise LookupError(uri)
    table = AuditTable(uri, create=False)
    runs = {r["run_id"]: {"run_id": r["run_id"], "version": r["version"], "read_at_us": r["at_us"]}
            for r in table.records(TABLE_KEY) if r["fact"] == RUN_READ}
    return evidence(table.records(user_id), runs)


EXAMPLE = {
    "user_id": "u-42",
    "steps": [
        {"fact": "received", "at_us": 1748340001000000, "kind": "object", "channel": "web", "objection_id": "0b9e",
         "proof": {"partition": 3, "offset": 1207, "audit": {"partition": 3, "offset": 88, "hash": "9f2c…", "prev": "41d0…"}}},
        {"fact": "purged", "at_us": 1748340004000000, "objection_ids": ["0b9e"],
         "proof": {"version": 412, "rows_purged": 17, "receipt_partition": 3, "receipt_offset": 530, "audit": {"partition": 3, "offset": 90, "hash": "c1aa…", "prev": "77e3…"}}},
    ],
    "trained_on_runs": [{"run_id": "run-2025-05-20", "version": 390, "read_at_us": 1747731600000000}],
}


@router.get(
    "/audit/{user_id:id}",  # any id reaches the handler, slashes included
    summary="One person's audit evidence",
    description="Every step of the person's audit chain in order (received, enforced, purged, drop counts), each with its "
    "time and proof (broker partition and offset, Delta version, the audit record's hash), and the training runs that "
    "read their posts. Needs `consentry:admin`.",
    responses={
        200: {"content": {"application/json": {"example": EXAMPLE}}},
        401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED,
        422: problem("The user_id is not a canonical identifier (no person can have it).", "user_id contains a control character"),
        503: problem("The audit table is not there yet or could not be read.", "no audit table yet: is the audit writer running?"),
    },
)
async def audit_of(user_id: str, admin: AdminUser, settings: SettingsDep) -> dict[str, Any]:
    require_canonical("user_id", user_id)
    try:
        found = await asyncio.to_thread(_read, audit_table_uri(settings), user_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no audit table yet: is the audit writer running?") from exc
    except Exception as exc:
        log.exception("could not read the audit table for an evidence request by %s", admin.user_id)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the audit table could not be read") from exc
    return {"user_id": user_id, **found}
