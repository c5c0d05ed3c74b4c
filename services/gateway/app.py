"""The gateway application: `create_app(settings)`; network clients open in `lifespan`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from services.gateway import metrics
from services.gateway.consent_client import ConsentClient
from services.gateway.limits import BodySizeLimit
from services.gateway.publisher import KafkaObjectionPublisher, ObjectionPublisher
from services.gateway.receipts import ReceiptCache
from services.gateway.routers import health, objections
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None, publisher: ObjectionPublisher | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.warn_if_insecure()
        app.state.settings = settings
        app.state.publisher = publisher or KafkaObjectionPublisher(settings)
        app.state.consent = ConsentClient(settings.consent_url)
        app.state.receipts = ReceiptCache()
        await app.state.publisher.start()
        try:
            yield
        finally:
            await app.state.publisher.stop()
            await app.state.consent.close()

    app = FastAPI(
        title="Consentry gateway",
        version="0.1.0",
        description="File, check and withdraw objections to the use of your posts for AI training.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def count_requests(request: Request, call_next) -> Response:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(path, str(response.status_code)).inc()
        metrics.LATENCY.labels(path).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, max_bulk_bytes=settings.max_bulk_body_bytes)
    app.include_router(objections.router)
    app.include_router(health.router)
    return app
