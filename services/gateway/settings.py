from __future__ import annotations

import logging
from pathlib import Path

from pydantic import AliasChoices, Field

from consentry.links import DEFAULT_TTL_SECONDS
from consentry.settings import CommonSettings

DEV_SECRET = "consentry-development-secret-change-me"
log = logging.getLogger(__name__)


class GatewaySettings(CommonSettings):
    gateway_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("GATEWAY_HOST", "gateway_host"))
    gateway_port: int = Field(default=8080, validation_alias=AliasChoices("GATEWAY_PORT", "gateway_port"))
    jwt_secret: str = Field(default=DEV_SECRET, description="Verifies user and admin tokens (HS256) and signs one-click links.")
    jwks_url: str | None = Field(default=None, description="Identity provider's JWKS URL: RS256 bearer tokens are checked against it.")
    jwks_file: Path | None = Field(default=None, description="A JWKS file, instead of a URL.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of RS256 (identity provider) tokens.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of RS256 (identity provider) tokens.")
    consent_url: str = Field(default="http://127.0.0.1:6066", description="The consent service's web views.")
    ingest_url: str = Field(default="http://127.0.0.1:9101", description="The ingest service's status server (for the dashboard).")
    sink_url: str = Field(default="http://127.0.0.1:9102", description="The training sink's status server (for the dashboard).")
    dashboard_rejects: int = Field(default=10, ge=1, le=500, description="How many recent posts.rejected records the dashboard lists.")
    publish_timeout_s: float = Field(default=5.0, description="How long a request waits for the broker's ack.")
    gateway_workers: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("GATEWAY_WORKERS", "gateway_workers"),
        description="Gateway processes sharing the port (one per core for throughput). Each keeps its own "
        "receipt cache: a status read on another process shows `received` only once consent applied the event.",
    )

    public_url: str | None = Field(default=None, description="The gateway's address as people reach it, for one-click links.")
    link_ttl_seconds: int = Field(default=DEFAULT_TTL_SECONDS, gt=0, description="Lifetime of one-click links.")

    # Token buckets (in memory, per replica); a rate of 0 turns a limit off.
    rate_limit_user_per_s: float = Field(default=2.0, ge=0, description="Sustained requests per second per user.")
    rate_limit_user_burst: int = Field(default=20, ge=1)
    rate_limit_address_per_s: float = Field(default=50.0, ge=0, description="Sustained requests per second per client address.")
    rate_limit_address_burst: int = Field(default=200, ge=1)

    max_body_bytes: int = Field(default=64 * 1024, gt=0, description="Largest request body, except the import.")
    max_import_bytes: int = Field(default=1 << 30, gt=0, description="Largest body of POST /v1/admin/objections:import (and notices:import).")
    cors_allow_origins: str = Field(default="", description="Comma-separated origins allowed by CORS; empty: CORS closed.")

    @property
    def public_base_url(self) -> str:
        return (self.public_url or f"http://{self.gateway_host}:{self.gateway_port}").rstrip("/")

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def insecure_secret(self) -> bool:
        return self.jwt_secret == DEV_SECRET

    def warn_if_insecure(self) -> None:
        if self.insecure_secret:
            log.warning("CONSENTRY_JWT_SECRET is not set: using the development secret; never do this in production")
