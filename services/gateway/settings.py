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
    publish_timeout_s: float = Field(default=5.0, description="How long a request waits for the broker's ack.")
    max_body_bytes: int = Field(default=64 << 10, description="Largest request body (413 above it).")
    max_bulk_body_bytes: int = Field(default=512 << 20, description="Largest body for /v1/admin/ (bulk imports).")

    def warn_if_insecure(self) -> None:
        if self.jwt_secret == DEV_SECRET:
            log.warning("CONSENTRY_JWT_SECRET is not set: using the development secret; never do this in production")
