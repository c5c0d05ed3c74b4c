from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from consentry.links import DEFAULT_TTL_SECONDS
from consentry.settings import CommonSettings

# Public (it is in this file): tokens and links signed with it open a gateway only where
# nobody else can reach it (loopback) or in the demo; services.gateway.security decides.
DEV_SECRET = "consentry-development-secret-change-me"
DEFAULT_AUDIENCE = "consentry"


class GatewaySettings(CommonSettings):
    gateway_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("GATEWAY_HOST", "gateway_host"))
    gateway_port: int = Field(default=8080, validation_alias=AliasChoices("GATEWAY_PORT", "gateway_port"))
    # Keys (docs/operations.md, "Keys and rotation"; services/gateway/security.py).
    jwt_secret: str | None = Field(
        default=None, repr=False,
        description="One secret for every purpose (people's and operators' tokens, links): only on loopback or in the demo.",
    )
    user_keys: str | None = Field(default=None, repr=False, description="`kid:secret,...` (oldest first): verify people's HS256 bearer tokens.")
    admin_keys: str | None = Field(default=None, repr=False, description="`kid:secret,...`: verify operators' HS256 bearer tokens (the only ones whose scopes count).")
    link_keys: str | None = Field(default=None, repr=False, description="`kid:secret,...`: verify one-click links (the newest signs); CSRF keys derive from them.")
    service_token: str | None = Field(default=None, repr=False, description="Sent to the consent service with every look-up (its CONSENTRY_SERVICE_TOKEN).")
    demo: bool = Field(default=False, description="`consentry up --demo`: the development secret is allowed beyond loopback. Never in production.")
    jwks_url: str | None = Field(default=None, description="Identity provider's JWKS URL: RS256 bearer tokens are checked against it.")
    jwks_file: Path | None = Field(default=None, description="A JWKS file, instead of a URL.")
    jwt_audience: str = Field(default=DEFAULT_AUDIENCE, description="Required `aud` of every bearer token (HS256 and the identity provider's).")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of every bearer token when set; required with an identity provider.")
    trusted_proxies: str = Field(
        default="", description="Comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (the client address of rate limits); empty: none, the TCP peer is the client.",
    )
    consent_url: str = Field(default="http://127.0.0.1:6066", description="The consent service's web views.")
    ingest_url: str = Field(default="http://127.0.0.1:9101", description="The ingest service's status server (for the dashboard).")
    sink_url: str = Field(default="http://127.0.0.1:9102", description="The training sink's status server (for the dashboard).")
    # The audit trail's evidence (GET /v1/admin/audit/{user_id}): the Delta audit table services/audit writes.
    audit_uri: str | None = Field(default=None, description="The Delta audit table; default beside the training store (<TRAINING_STORE_URI>/../audit).")
    training_store_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("TRAINING_STORE_URI", "training_store_uri"),
        description="The training store (locates the audit table when CONSENTRY_AUDIT_URI is unset); default $CONSENTRY_DATA_DIR/training.",
    )
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
        """No real single secret: the public development one stands in for it."""
        return self.jwt_secret is None or self.jwt_secret == DEV_SECRET

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]


def audit_table_uri(settings: GatewaySettings) -> str:
    from consentry.audit import default_audit_uri

    return settings.audit_uri or default_audit_uri(settings.training_store_uri or str((settings.data_dir / "training").resolve()))
