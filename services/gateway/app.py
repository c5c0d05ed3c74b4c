"""The gateway application: `create_app(settings)`; network clients open in `lifespan`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from consentry.group_lag import GroupLagReader
from services.gateway import health, metrics
from services.gateway.api import admin, audit, objections, runs
from services.gateway.auth import verifier_for
from services.gateway.bodylimit import BodyLimitMiddleware
from services.gateway.consent_client import ConsentClient
from services.gateway.console import router as console
from services.gateway.console.observer import DashboardObserver
from services.gateway.deps import RateLimited
from services.gateway.pages import router as pages
from services.gateway.publisher import KafkaObjectionPublisher, ObjectionPublisher
from services.gateway.ratelimit import RateLimiter
from services.gateway.receipts import ReceiptCache
from services.gateway.requestid import RequestIdMiddleware
from services.gateway.security import check
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class RequestMetricsMiddleware:
    """Requests and latency by route. Plain ASGI rather than @app.middleware("http"): that one
    runs the app in a task group, which would turn a 413 raised while reading the body into
    an exception group (and a 400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def record_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(path, str(status_code)).inc()
            metrics.LATENCY.labels(path).observe(time.perf_counter() - started)


def server_options(settings: GatewaySettings) -> dict[str, object]:
    """How uvicorn serves the gateway. uvicorn's own proxy-header handling is off (by default it
    believes X-Forwarded-For from 127.0.0.1): the app does it, for CONSENTRY_TRUSTED_PROXIES only."""
    return {
        "host": settings.gateway_host, "port": settings.gateway_port, "log_level": "warning", "access_log": False,
        "proxy_headers": False, "server_header": False,
    }


def create_app(settings: GatewaySettings | None = None, publisher: ObjectionPublisher | None = None) -> FastAPI:
    """Raises services.gateway.security.InsecureConfiguration for keys or trust settings that
    would let strangers in (the message says what to set)."""
    settings = settings or GatewaySettings()
    keys = check(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.keys = keys
        app.state.publisher = publisher or KafkaObjectionPublisher(settings)
        app.state.consent = ConsentClient(settings.consent_url, service_token=settings.service_token)
        app.state.receipts = ReceiptCache()
        app.state.observer = DashboardObserver(settings, app.state.publisher)
        app.state.verifier = verifier_for(settings, keys)
        app.state.user_limiter = RateLimiter(settings.rate_limit_user_per_s, settings.rate_limit_user_burst)
        app.state.address_limiter = RateLimiter(settings.rate_limit_address_per_s, settings.rate_limit_address_burst)
        app.state.group_lag = GroupLagReader(settings)
        await app.state.publisher.start()
        try:
            yield
        finally:
            await app.state.group_lag.close()
            await app.state.observer.close()
            await app.state.publisher.stop()
            await app.state.consent.close()

    app = FastAPI(
        title="Consentry gateway",
        version="0.1.0",
        description=(
            "File, check and withdraw objections to the use of your posts for AI training. People authenticate "
            "with a bearer JWT whose `sub` is their user id and whose `aud` names this service (HS256 with the "
            "people's keys, or RS256 from the identity provider's JWKS); a one-click link from a notice carries a "
            "signed, expiring token instead; operators use a token with the `consentry:admin` scope (signed with "
            "an operator's key or by the identity provider), and `consentry:import-withdrawals` to import withdrawals."
        ),
        lifespan=lifespan,
    )

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> Response:
        if request.url.path.startswith("/object"):  # people on the one-click page get a page
            return pages.rate_limited_page(request, exc.headers or {})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's 422 without each field's `input`: the default echoes it, and an input that
        cannot be encoded back (a lone surrogate sent as a JSON escape) turned the 422 into a
        500. The documented body (problems.ValidationProblem) is loc, msg and type."""
        errors = [{k: v for k, v in error.items() if k not in ("input", "ctx", "url")} for error in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.include_router(objections.router)
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.include_router(audit.router)
    app.include_router(runs.router)
    app.include_router(health.router)
    app.include_router(console.router)

    # Outermost last: the size limit sees every request first; CORS only when origins are listed.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(BodyLimitMiddleware, default_limit=settings.max_body_bytes, by_path={admin.IMPORT_PATH: settings.max_import_bytes, admin.NOTICES_IMPORT_PATH: settings.max_import_bytes})
    if settings.trusted_proxy_list:
        # Outermost: the client address (rate limits) and the scheme (the CSRF cookie's Secure
        # flag) come from X-Forwarded-For / -Proto only when the TCP peer is a trusted proxy;
        # the rightmost address a trusted proxy did not add is the client.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_list)
    # Outermost of all: every response (a 413, a 429) carries its request id.
    app.add_middleware(RequestIdMiddleware)
    return app
