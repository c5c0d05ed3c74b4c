from __future__ import annotations

from pydantic import AliasChoices, Field

from consentry.audit import default_audit_uri
from consentry.settings import CommonSettings


class AuditSettings(CommonSettings):
    training_store_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRAINING_STORE_URI", "training_store_uri"),
        description="The training store, whose vacuum and reconciliation records the audit trail follows; default $CONSENTRY_DATA_DIR/training.",
    )
    audit_uri: str | None = Field(default=None, description="The Delta audit table; default beside the training store (<TRAINING_STORE_URI>/../audit).")
    audit_host: str = Field(default="127.0.0.1", description="Where the audit writer's /metrics, /healthz, /readyz listen.")
    audit_port: int = Field(default=9104)
    audit_files_poll_s: float = Field(default=30.0, gt=0, description="How often the vacuum and reconciliation records beside the table are read.")

    audit_drop_counts_every_s: float = Field(
        default=600.0, gt=0, description="Drop counts are summed per user, day and reason and chained this often (one record per period, not per emission of ingest)."
    )
    audit_verify_interval_s: float = Field(
        default=3600.0, ge=0, description="How often the writer verifies the audit table's whole chain (consentry_audit_chain_broken); 0: never."
    )

    @property
    def store_uri(self) -> str:
        return self.training_store_uri or str((self.data_dir / "training").resolve())

    @property
    def table_uri(self) -> str:
        return self.audit_uri or default_audit_uri(self.store_uri)
