from __future__ import annotations

from pathlib import Path

from pydantic import Field

from consentry.settings import CommonSettings


class ConsentSettings(CommonSettings):
    consent_host: str = Field(default="127.0.0.1", description="Where the consent web views listen.")
    consent_port: int = Field(default=6066)
    consent_store: str = Field(default="rocksdb://", description="faust table store: rocksdb:// or memory://")
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000

    @property
    def app_id(self) -> str:
        return self.topics.group("consent")

    @property
    def state_dir(self) -> Path:
        return (self.data_dir / "consent").resolve()

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{host.strip()}" for host in self.bootstrap_servers.split(","))
