from __future__ import annotations

from pathlib import Path

from pydantic import Field

from consentry.settings import CommonSettings


class ConsentSettings(CommonSettings):
    consent_host: str = Field(default="127.0.0.1", description="Where the consent web views listen.")
    consent_port: int = Field(default=6066)
    consent_advertised_url: str | None = Field(
        default=None,
        description="How the other consent workers reach this one (a user's look-up is routed to the worker owning "
        "their partition); default http://CONSENTRY_CONSENT_HOST:CONSENTRY_CONSENT_PORT. Set it when the host is 0.0.0.0.",
    )
    consent_store: str = Field(default="rocksdb://", description="faust table store: rocksdb:// or memory://")
    consent_standby_replicas: int = Field(
        default=0,
        ge=0,
        description="Warm copies of each consent table partition kept by other workers (faust's table_standby_replicas): a "
        "partition that moves is recovered from a near-complete copy instead of the whole changelog. Needs more workers than copies.",
    )
    service_token: str | None = Field(
        default=None, repr=False,
        description="A shared secret the gateway sends (Authorization: Bearer) with every user look-up; required when the "
        "web views listen beyond loopback. Health, readiness and metrics stay open.",
    )
    consent_max_record_bytes: int = Field(
        default=1_000_000,
        gt=0,
        description="Largest record the consent worker sends (its producer's max.request.size, faust's default): at "
        "most the broker's message.max.bytes and the changelog topic's max.message.bytes. A record over it stops the worker.",
    )

    consent_producer_linger_ms: int = Field(
        default=5,
        ge=0,
        description="How long the consent worker's producer waits to fill a batch (faust's producer_linger): changelog "
        "records written meanwhile leave in one produce request instead of one each. Delays a change reaching ingest by "
        "at most this much; offsets are committed only after the records are acknowledged either way.",
    )

    consent_batch_max: int = Field(
        default=2000,
        gt=0,
        description="Most events the consent agent applies as one batch: their rows are written together (one "
        "RocksDB write batch and one changelog record batch per partition, a user's row once), and acknowledged together.",
    )

    consent_batch_within_ms: int = Field(
        default=50,
        gt=0,
        description="How long the consent agent waits to fill a batch before it applies what it has: the most an "
        "event waits before it is applied, under light traffic.",
    )

    consent_record_batch_bytes: int = Field(
        default=262_144,
        gt=0,
        description="Largest changelog record batch the consent worker sends (its producer's max_batch_size); "
        "at most consent_max_record_bytes. A batch of rows past it is sent as several.",
    )

    @property
    def app_id(self) -> str:
        return self.topics.group("consent")

    @property
    def canonical_url(self) -> str:
        return self.consent_advertised_url or f"http://{self.consent_host}:{self.consent_port}"

    @property
    def state_dir(self) -> Path:
        return (self.data_dir / "consent").resolve()

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{host.strip()}" for host in self.bootstrap_servers.split(","))
