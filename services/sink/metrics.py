from prometheus_client import Counter, Gauge, Histogram

APPENDED = Counter("consentry_sink_rows_appended_total", "Rows appended to the training store")
DUPLICATES = Counter("consentry_sink_duplicates_total", "Posts skipped because their post_id is stored")
PURGES = Counter("consentry_sink_purges_total", "Purge markers applied")
ROWS_PURGED = Counter("consentry_sink_rows_purged_total", "Rows deleted by purges")
COMMITS = Counter("consentry_sink_batches_total", "Batches applied to the store")
COMMIT_SECONDS = Histogram(
    "consentry_sink_commit_seconds", "Time to apply one batch to the store",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TABLE_VERSION = Gauge("consentry_sink_table_version", "Delta table version")
INVALID = Counter("consentry_sink_invalid_total", "Unreadable training.posts messages skipped", ["reason"])
ERRORS = Counter("consentry_sink_errors_total", "Errors, by stage", ["stage"])
