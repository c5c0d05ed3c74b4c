"""FastAPI dependencies, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway.auth import InvalidToken, Principal, verify_token
from services.gateway.consent_client import ConsentClient
from services.gateway.observer import DashboardObserver
from services.gateway.publisher import ObjectionPublisher
from services.gateway.receipts import ReceiptCache
from services.gateway.settings import GatewaySettings

_bearer = HTTPBearer(auto_error=False, description="A JWT whose `sub` is your user_id.")


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_publisher(request: Request) -> ObjectionPublisher:
    return request.app.state.publisher


def get_consent(request: Request) -> ConsentClient:
    return request.app.state.consent


def get_receipts(request: Request) -> ReceiptCache:
    return request.app.state.receipts


def get_observer(request: Request) -> DashboardObserver:
    return request.app.state.observer


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
PublisherDep = Annotated[ObjectionPublisher, Depends(get_publisher)]
ConsentDep = Annotated[ConsentClient, Depends(get_consent)]
ReceiptsDep = Annotated[ReceiptCache, Depends(get_receipts)]
ObserverDep = Annotated[DashboardObserver, Depends(get_observer)]


def current_principal(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return verify_token(settings.jwt_secret, credentials.credentials)
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this operation needs the admin scope")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
