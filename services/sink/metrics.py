from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from consentry.build import BUILD_INFO  # noqa: F401  (consentry_build_info, in every service)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consentry.lag import CONSUMER_LAG as LAG  # noqa: F401  (shared by every service)

APPENDED = Counter("consentry_sink_rows_appended_total", "Rows appended to the training store")
DUPLICATES = Counter("consentry_sink_duplicates_total", "Posts skipped because their post_id is stored")
PURGES = Counter("consentry_sink_purges_total", "Purge markers applied")
ROWS_PURGED = Counter("consentry_sink_rows_purged_total", "Rows deleted by purges")
COMMITS = Counter("consentry_sink_batches_total", "Batches applied to the store")
COMMIT_SECONDS = Histogram(
    "consentry_sink_commit_seconds", "Time to apply one batch to the store",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STAGE_SECONDS = Histogram(
    "consentry_sink_stage_seconds",
    "Time of each stage of a flush: purge (the delete's commit), dedupe (the look-up of the batch's post_ids in the table), append",
    ["stage"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TABLE_VERSION = Gauge("consentry_sink_table_version", "Delta table version")
INVALID = Counter("consentry_sink_invalid_total", "Unreadable training.posts messages skipped", ["reason"])
ERRORS = Counter("consentry_sink_errors_total", "Errors, by stage", ["stage"])
LINEAGE_READS = Gauge("consentry_sink_lineage_reads", "Snapshots training runs opened on this table (consentry.lineage), as the sink holds them")
TRAINED_ON = Counter("consentry_sink_purges_trained_on_total", "Purged users whose rows a training run had read (their purged receipt names the runs)")
TABLE_BYTES = Gauge("consentry_sink_table_bytes", "Total size of the Delta table's live files (from its add actions)")
TABLE_FILES = Gauge("consentry_sink_table_files", "Live data files of the Delta table")
LAST_PURGE = Gauge("consentry_sink_last_purge_timestamp", "When this sink last deleted rows for a purge (Unix seconds; 0: not since it started)")
LAST_VACUUM = Gauge(
    "consentry_sink_last_vacuum_timestamp",
    "When `consentry vacuum` last finished on this table (Unix seconds; 0: never), from the table's vacuum record",
)
CONFLICTS = Counter(
    "consentry_sink_commit_conflicts_total",
    "Delta commits overtaken by another writer's (reconciliation, another replica) and done again, by operation",
    ["operation"],
)
REWINDS = Counter(
    "consentry_sink_rewinds_total",
    "Partitions the sink replayed from the table's own positions because the table was behind its consumer group (restored or created again)",
)
UNREPLAYABLE = Counter(
    "consentry_sink_unreplayable_records_total",
    "training.posts records the table needed that retention had deleted: never applied (run `consentry reconcile`)",
)
LAST_VACUUM_FILES = Gauge("consentry_sink_last_vacuum_files_removed", "Files the last vacuum removed")


class _VacuumRuns(Collector):
    """consentry_vacuum_runs_total: runs of `consentry vacuum` on this table. The command is
    one-shot, so it counts its runs in the table's vacuum record and the sink exposes the
    count (services.sink.vacuum_record explains why not the Delta log)."""

    def __init__(self) -> None:
        self.runs = 0

    def collect(self):  # type: ignore[no-untyped-def]
        family = CounterMetricFamily("consentry_vacuum_runs", "Runs of `consentry vacuum` recorded with the training store")
        family.add_metric([], self.runs)
        yield family


VACUUM_RUNS = _VacuumRuns()
REGISTRY.register(VACUUM_RUNS)


class _Reconciliation(Collector):
    """consentry_reconcile_*: the passes of `consentry reconcile` and of the sink's own periodic
    pass, from the reconciliation record beside the table (services.sink.reconcile_record),
    which every sink replica reads: one-shot passes cannot be scraped."""

    def __init__(self) -> None:
        self.record = None  # a ReconcileRecord, once read

    def collect(self):  # type: ignore[no-untyped-def]
        record = self.record
        runs = CounterMetricFamily("consentry_reconcile_runs", "Reconciliation passes recorded with the training store")
        runs.add_metric([], record.runs if record else 0)
        yield runs
        purged = CounterMetricFamily(
            "consentry_reconcile_rows_purged", "Rows reconciliation deleted: each one a leak caught (a post that must not have been stored)"
        )
        purged.add_metric([], record.rows_purged_total if record else 0)
        yield purged
        gauges = (
            ("consentry_reconcile_last_run_timestamp_seconds", "When the last reconciliation pass ended (Unix seconds; 0: never)",
             record.last_ended_at_us / 1e6 if record else 0),
            ("consentry_reconcile_last_duration_seconds", "How long the last reconciliation pass took", record.last_seconds if record else 0),
            ("consentry_reconcile_last_rows_purged", "Rows the last reconciliation pass deleted (above 0: a leak was caught)",
             record.last_rows_purged if record else 0),
            ("consentry_reconcile_last_users", "Objected users the last reconciliation pass checked", record.last_users if record else 0),
        )
        for name, documentation, value in gauges:
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], value)
            yield gauge


RECONCILIATION = _Reconciliation()
REGISTRY.register(RECONCILIATION)

# Housekeeping inside the sink (services/sink/housekeeping.py).
LAST_COMPACTION = Gauge("consentry_sink_last_compaction_timestamp", "When this sink last finished a compaction (Unix seconds; 0: not since it started)")
COMPACTED_FILES = Counter("consentry_sink_compaction_files_removed_total", "Small files compactions rewrote into larger ones")
HOUSEKEEPING_SECONDS = Histogram(
    "consentry_sink_housekeeping_seconds", "Duration of the sink's compactions and vacuums, by task", ["task"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
VACUUM_FILES = Counter("consentry_sink_vacuum_files_removed_total", "Files the sink's own vacuums removed")
VACUUM_INTERVAL = Gauge(
    "consentry_sink_vacuum_interval_seconds", "The sink's vacuum schedule (CONSENTRY_VACUUM_INTERVAL_S; 0: vacuum runs outside the sink)"
)
