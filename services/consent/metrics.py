from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

from consentry.build import BUILD_INFO  # noqa: F401  (consentry_build_info, in every service)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

OBJECTIONS = Counter("consentry_consent_objections_total", "Objection events applied, by kind and channel", ["kind", "channel"])
DUPLICATES = Counter("consentry_consent_duplicates_total", "Re-delivered objection ids (state unchanged)")
REPARTITIONED = Counter("consentry_consent_repartitioned_total", "Objections that arrived off their user's home partition")
NOTICES = Counter("consentry_consent_notices_total", "Notices recorded, by channel", ["channel"])
DUPLICATES_NOTICES = Counter("consentry_consent_notice_duplicates_total", "Re-delivered notice ids (state unchanged)")
REPARTITIONED_NOTICES = Counter("consentry_consent_notices_repartitioned_total", "Notices that arrived off their user's home partition")
RECEIPTS = Counter("consentry_consent_receipts_total", "Receipts applied, by kind", ["kind"])

# One series per label value, looked up once: `labels()` takes a lock and checks its arguments
# on every call, for every event (the values are a few enum members).
objections_applied = lru_cache(maxsize=256)(OBJECTIONS.labels)
notices_recorded = lru_cache(maxsize=64)(NOTICES.labels)
receipts_applied = lru_cache(maxsize=16)(RECEIPTS.labels)
DEAD_LETTERS = Counter(
    "consentry_consent_dead_letters_total",
    "Events the consent service could not apply, sent to the dead-letter topic, by source topic and reason",
    ["topic", "reason"],
)
ENFORCE_LATENCY = Histogram("consentry_objection_enforce_seconds", "Objection received -> enforced (ingest drops the user's posts)", buckets=_LATENCY_BUCKETS)
PURGE_LATENCY = Histogram("consentry_objection_purge_seconds", "Objection received -> purged (Delta delete committed)", buckets=_LATENCY_BUCKETS)

# Kept by services.consent.backlog.ConsentWatch (bound in services.consent.monitoring).
CONSENT_USERS = Gauge("consentry_consent_users", "Users in the consent table partitions this worker owns")
BACKLOG_AGE = Gauge(
    "consentry_purge_backlog_age_seconds",
    "Age of this worker's oldest objection not yet purged (0 when none); imports count from when they were recorded",
)
BACKLOG = Gauge("consentry_purge_backlog_objections", "This worker's objections not yet purged")
