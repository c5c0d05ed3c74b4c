"""The gateway application: `create_app(settings)`; network clients open in `lifespan`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import metrics
from services.gateway.consent_client import ConsentClient
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

    app.add_middleware(RequestMetrics)
    app.include_router(objections.router)
    app.include_router(health.router)
    return app


class RequestMetrics:
    """Counts requests by route and status, and their latency. A plain ASGI middleware:
    starlette's BaseHTTPMiddleware (`@app.middleware`) cost a third of each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(path, str(status_code)).inc()
            metrics.LATENCY.labels(path).observe(time.perf_counter() - started)
