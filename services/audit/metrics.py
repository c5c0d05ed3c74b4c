from prometheus_client import Counter, Gauge

from consentry.build import BUILD_INFO  # noqa: F401  (consentry_build_info, in every service)
from consentry.lag import CONSUMER_LAG as LAG  # noqa: F401  (shared by every service: the audit lag alert reads it)

RECORDS = Counter("consentry_audit_records_total", "Audit records written to consentry.audit, by fact", ["fact"])
UNREADABLE = Counter("consentry_audit_unreadable_total", "Source records the audit writer could not read (skipped: no record), by topic", ["topic"])
ERRORS = Counter("consentry_audit_errors_total", "Errors, by stage", ["stage"])
TABLE_BEHIND = Gauge("consentry_audit_table_rows_behind", "Audit records on the topic not yet in the Delta audit table (retried at each flush)")
CHAIN_BROKEN = Gauge("consentry_audit_chain_broken", "1 when the chain is broken: the writer's last verification of the audit table named a broken link, or the last record of a partition is unreadable")
LAST_VERIFIED = Gauge("consentry_audit_last_verified_timestamp_seconds", "When the writer last verified the audit table's chain")
