"""Liveness, readiness (broker reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.gateway.deps import PublisherDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the broker is reachable", responses={503: {"description": "Broker unreachable."}})
async def readyz(publisher: PublisherDep, response: Response) -> dict[str, object]:
    if await publisher.broker_reachable():
        return {"ready": True, "detail": "broker reachable"}
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"ready": False, "detail": "broker unreachable"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
