from __future__ import annotations

import logging

from pydantic import AliasChoices, Field

from consentry.settings import CommonSettings

DEV_SECRET = "consentry-development-secret-change-me"
log = logging.getLogger(__name__)


class GatewaySettings(CommonSettings):
    gateway_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("GATEWAY_HOST", "gateway_host"))
    gateway_port: int = Field(default=8080, validation_alias=AliasChoices("GATEWAY_PORT", "gateway_port"))
    jwt_secret: str = Field(default=DEV_SECRET, description="Verifies user and admin tokens (HS256).")
    consent_url: str = Field(default="http://127.0.0.1:6066", description="The consent service's web views.")
    ingest_url: str = Field(default="http://127.0.0.1:9101", description="The ingest service's status server (for the dashboard).")
    sink_url: str = Field(default="http://127.0.0.1:9102", description="The training sink's status server (for the dashboard).")
    dashboard_rejects: int = Field(default=10, ge=1, le=500, description="How many recent posts.rejected records the dashboard lists.")
    publish_timeout_s: float = Field(default=5.0, description="How long a request waits for the broker's ack.")

    def warn_if_insecure(self) -> None:
        if self.jwt_secret == DEV_SECRET:
            log.warning("CONSENTRY_JWT_SECRET is not set: using the development secret; never do this in production")
