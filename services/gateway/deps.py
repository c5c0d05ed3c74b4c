"""FastAPI dependencies, as Annotated aliases."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from services.gateway import metrics
from services.gateway.auth import ADMIN_SCOPE, InvalidToken, Principal, TokenVerifier
from services.gateway.consent_client import ConsentClient
from services.gateway.publisher import ObjectionPublisher
from services.gateway.ratelimit import RateLimiter
from services.gateway.receipts import ReceiptCache
from services.gateway.security import GatewayKeys
from services.gateway.settings import GatewaySettings

_bearer = HTTPBearer(auto_error=False, description="A JWT whose `sub` is your user_id.")


class RateLimited(HTTPException):
    """429 with Retry-After; the app renders it as a page on the one-click routes."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests; retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def get_publisher(request: Request) -> ObjectionPublisher:
    return request.app.state.publisher


async def get_consent(request: Request) -> ConsentClient:
    return request.app.state.consent


async def get_receipts(request: Request) -> ReceiptCache:
    return request.app.state.receipts


async def get_verifier(request: Request) -> TokenVerifier:
    return request.app.state.verifier


async def get_keys(request: Request) -> GatewayKeys:
    return request.app.state.keys


@dataclass(frozen=True)
class Filing:
    """What filing and reading objections needs, as one dependency: every dependency FastAPI
    solves costs tens of microseconds, and `POST /v1/objections` is the hot path."""

    publisher: ObjectionPublisher
    receipts: ReceiptCache
    consent: ConsentClient


async def get_filing(request: Request) -> Filing:
    state = request.app.state
    return Filing(state.publisher, state.receipts, state.consent)


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
PublisherDep = Annotated[ObjectionPublisher, Depends(get_publisher)]
ConsentDep = Annotated[ConsentClient, Depends(get_consent)]
ReceiptsDep = Annotated[ReceiptCache, Depends(get_receipts)]
VerifierDep = Annotated[TokenVerifier, Depends(get_verifier)]
KeysDep = Annotated[GatewayKeys, Depends(get_keys)]
FilingDep = Annotated[Filing, Depends(get_filing)]


def limit_user(request: Request, user_id: str) -> None:
    """Spend one token of `user_id`'s bucket or raise 429. Call it on the event loop only
    (the buckets are not shared with worker threads)."""
    limiter: RateLimiter = request.app.state.user_limiter
    verdict = limiter.take(user_id, time.monotonic())
    if not verdict.allowed:
        metrics.RATE_LIMITED.labels("user").inc()
        raise RateLimited(verdict.retry_after_s)


async def limit_address(request: Request) -> None:
    """Per client address: the TCP peer's, or the one a trusted proxy forwarded
    (CONSENTRY_TRUSTED_PROXIES; the app's ProxyHeadersMiddleware rewrote it before this)."""
    limiter: RateLimiter = request.app.state.address_limiter
    address = request.client.host if request.client else "unknown"
    verdict = limiter.take(address, time.monotonic())
    if not verdict.allowed:
        metrics.RATE_LIMITED.labels("address").inc()
        raise RateLimited(verdict.retry_after_s)


# Async, as are the getters above: FastAPI runs a sync dependency in a worker thread, and that
# hop cost more than the whole request (docs/benchmarks.md). Only with identity-provider keys,
# whose fetch (PyJWKClient) blocks, does verification go to a worker thread.
async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    verifier: TokenVerifier = request.app.state.verifier
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        if verifier.keys is not None:
            principal = await run_in_threadpool(verifier.verify, credentials.credentials)
        else:
            principal = verifier.verify(credentials.credentials)  # HS256: CPU only, ~30 µs
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    return principal


async def limited_principal(request: Request, principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    limit_user(request, principal.user_id)
    return principal


ADMIN_REFUSAL = f"this operation needs the {ADMIN_SCOPE} scope, in a token signed with an operator's key or by the identity provider"


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, ADMIN_REFUSAL)
    return principal


CurrentUser = Annotated[Principal, Depends(limited_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
AddressLimit = Depends(limit_address)
