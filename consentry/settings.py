"""Settings shared by every service: where the broker is and what the topics are called.

Each service has its own pydantic-settings class that extends `CommonSettings`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentry.topics import Topics


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSENTRY_", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="An existing Kafka cluster; unset means the embedded broker.",
    )
    broker_port: int = Field(default=9092, description="Port of the embedded broker.")
    broker_flavor: Literal["auto", "kafka", "tansu"] = Field(
        default="auto",
        description="'auto': the embedded Tansu broker when KAFKA_BOOTSTRAP_SERVERS is unset, Apache Kafka otherwise.",
    )
    partitions: int = Field(default=8, ge=1, description="Partitions of the user-keyed topics Consentry creates.")
    topic_prefix: str = Field(default="", description="Prefix for every topic name (isolates test runs).")
    data_dir: Path = Field(default=Path("./var"), description="Local state: consent tables, logs.")
    log_level: str = "INFO"

    # Consent, ingest and the sink are consumer-group members; one definition for all three.
    session_timeout_ms: int = Field(default=10_000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(default=2_000, description="Consumer group heartbeat interval.")

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def on_embedded_broker(self) -> bool:
        """True when talking to Tansu: broker workarounds (consentry.patches) switch on."""
        if self.broker_flavor == "auto":
            return self.kafka_bootstrap_servers is None
        return self.broker_flavor == "tansu"

    @cached_property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)
