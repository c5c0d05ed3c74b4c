from __future__ import annotations

from pydantic import AliasChoices, Field

from consentry.settings import CommonSettings


class SinkSettings(CommonSettings):
    training_store_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRAINING_STORE_URI", "training_store_uri"),
        description="The Delta table; default $CONSENTRY_DATA_DIR/training.",
    )
    training_store_buckets: int = Field(
        default=64,
        ge=1,
        description="Buckets of a training store created now (a table keeps its own); a multiple of the partition count, so each sink writes only its own buckets.",
    )
    training_store_file_kib: int = Field(
        default=1024,
        ge=16,
        description="Size of the files of a training store created now (a table keeps its own, delta.targetFileSize): a purge rewrites about one file per user.",
    )
    store_options: dict[str, str] = Field(
        default={},
        description="CONSENTRY_STORE_OPTIONS: delta-rs storage options of the table, a JSON object (for S3: "
        '{"conditional_put": "etag"}, an endpoint...); keys are better left to AWS_* variables or the pod\'s role.',
    )
    # Housekeeping inside the sink (services/sink/housekeeping.py); 0 turns a task off.
    compact_interval_s: float = Field(default=3600.0, ge=0, description="Seconds between compactions of small files (0: none).")
    vacuum_interval_s: float = Field(
        default=21600.0, ge=0, description="Seconds between the sink's vacuums (0: none, run `consentry vacuum` on a schedule instead)."
    )
    sink_host: str = "127.0.0.1"
    sink_port: int = 9102
    # Large enough that a slow flush (a purge rewrites every file holding the user) is followed
    # by one batch of everything that arrived meanwhile: the sink catches up instead of falling behind.
    sink_batch_rows: int = Field(default=200_000, description="Flush a batch at this many messages...")
    sink_flush_seconds: float = Field(default=1.0, description="...or this long after its first message.")
    sink_stats_seconds: float = Field(default=5.0, description="Refresh table size, vacuum record and lag at most this often.")
    reconcile_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds between the sink's reconciliation passes (0: none, run `consentry reconcile` instead).",
    )
    reconcile_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="A purge not confirmed this long after its marker was written counts as lost: reconciliation does it.",
    )
    reconcile_margin_s: float = Field(
        default=300.0,
        ge=0,
        description="Rows stored this close to an objection's end are never taken for a leak (clocks, withdrawals on their way).",
    )
    lineage_margin_s: float = Field(
        default=60.0,
        ge=0,
        description="Clock allowance between ingest and the sink when naming the training runs that read a purged user's rows (over-counts within it).",
    )

    @property
    def store_uri(self) -> str:
        return self.training_store_uri or str((self.data_dir / "training").resolve())

    @property
    def storage_options(self) -> dict[str, str] | None:
        return dict(self.store_options) or None
