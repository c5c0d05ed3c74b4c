"""`GET /v1/admin/runs/{run_id}`: the objected users a training run included.

The source is `consentry.run-users` (compacted, kept for ever): at each purge the sink writes one
record per training run that read a table version still holding the purged user's rows
(consentry.domain.lineage). The gateway reads the topic to its end for each request: an
operator's occasional look-up, linear in the topic's size (one record per objected user and run
that read them); the audit table answers the same question at scale.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from consentry.kafka import client_options, records_until
from consentry.patches import true_end_offsets
from services.gateway.api.path_ids import require_canonical
from services.gateway.deps import AddressLimit, AdminUser, SettingsDep
from services.gateway.problems import FORBIDDEN, RATE_LIMITED, UNAUTHORIZED, problem
from services.gateway.settings import GatewaySettings

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AddressLimit])
log = logging.getLogger(__name__)
READ_TIMEOUT_S = 30.0


class RunUser(BaseModel):
    user_id: str
    objection_ids: list[str] = Field(description="The objections whose purge removed the rows the run had read.")
    purged_at: str = Field(description="When the purge's Delta delete was committed (RFC 3339, UTC).")
    purge_version: int = Field(description="The Delta version of that delete: the run read a version below it.")


class RunUsers(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "run_id": "run-2026-11-30",
                    "users": [{"user_id": "u-42", "objection_ids": ["0b9e6c0e"], "purged_at": "2026-12-01T08:00:00Z", "purge_version": 118}],
                }
            ]
        }
    }

    run_id: str
    users: list[RunUser] = Field(description="Every user who objected after the run read their posts, by purge time.")


async def run_users(settings: GatewaySettings, run_id: str) -> list[dict[str, Any]]:
    topic = settings.topics.run_users
    prefix = f"{run_id}\n".encode()
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, fetch_max_wait_ms=50, client_id="consentry-gateway-runs")
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist")
        ends = await true_end_offsets(client_options(settings), partitions, READ_TIMEOUT_S)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: dict[str, dict[str, Any]] = {}
        async for record in records_until(consumer, ends, READ_TIMEOUT_S, topic):
            if record.key is not None and record.key.startswith(prefix) and record.value:
                value = orjson.loads(record.value)
                found[value["user_id"]] = value  # compaction keeps the latest; so does this
        return sorted(found.values(), key=lambda v: (v["purged_at"], v["user_id"]))
    finally:
        await consumer.stop()


@router.get(
    "/runs/{run_id:id}",  # any id reaches the handler, slashes included
    response_model=RunUsers,
    summary="The objected users a training run included",
    description=(
        "Every user whose posts the run read (a Delta version that still held them) and who objected afterwards: "
        "their posts were purged from the table since, but the run's model learned from them. Used to plan "
        "retraining or unlearning. A run that read nobody's purged posts, or that is unknown, lists no users. "
        "Needs `consentry:admin`."
    ),
    responses={
        401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED,
        422: problem("The run_id is not a canonical identifier (no run can have it).", "run_id has leading or trailing whitespace"),
        503: problem("The lineage topic could not be read right now.", "training-run lineage is temporarily unavailable, please retry"),
    },
)
async def get_run(run_id: str, admin: AdminUser, settings: SettingsDep) -> RunUsers:
    require_canonical("run_id", run_id)  # before the look-up, whose failures are a 503
    try:
        users = await run_users(settings, run_id)
    except Exception as exc:
        log.warning("could not read %s for a run look-up (%s)", settings.topics.run_users, type(exc).__name__, exc_info=True)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "training-run lineage is temporarily unavailable, please retry", headers={"Retry-After": "5"}
        ) from exc
    return RunUsers(run_id=run_id, users=[RunUser(**{k: u[k] for k in RunUser.model_fields}) for u in users])

