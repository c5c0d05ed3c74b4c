"""Liveness, readiness (broker reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from services.gateway import metrics as gateway_metrics
from services.gateway.deps import PublisherDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    ready: bool
    detail: str


NOT_READY = {
    "model": Readiness,
    "description": "Broker unreachable.",
    "content": {"application/json": {"example": {"ready": False, "detail": "broker unreachable"}}},
}
METRICS = {200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}}


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the broker is reachable", responses={503: NOT_READY})
async def readyz(publisher: PublisherDep, response: Response) -> dict[str, object]:
    if await publisher.broker_reachable():
        return {"ready": True, "detail": "broker reachable"}
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"ready": False, "detail": "broker unreachable"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=METRICS)
async def metrics(request: Request) -> Response:
    """The gateway's own metrics (summed over its worker processes), then every consumer group's
    lag read from outside the groups (consentry/group_lag.py)."""
    body = gateway_metrics.metrics_text() + await request.app.state.group_lag.metrics_text()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
