from __future__ import annotations

from pydantic import Field

from consentry.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_host: str = Field(default="127.0.0.1", description="Where /metrics, /healthz, /readyz listen.")
    ingest_port: int = Field(default=9101)
    # Small enough that consent changes are picked up between batches within a few ms.
    ingest_max_records: int = Field(default=2_000, description="Most posts handled per poll.")
    ingest_poll_ms: int = Field(default=50)
    session_timeout_ms: int = Field(default=10_000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(default=2_000)
