import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from consentry.build import BUILD_INFO  # noqa: F401  (consentry_build_info, in every service)

OBJECTIONS = Counter("consentry_gateway_objections_total", "Objection events acknowledged by the broker", ["kind", "channel"])
PUBLISH_FAILURES = Counter("consentry_gateway_publish_failures_total", "Objections answered 503: the broker did not acknowledge")
REQUESTS = Counter("consentry_gateway_requests_total", "HTTP requests, by route and status", ["route", "status"])
LATENCY = Histogram(
    "consentry_gateway_request_seconds", "HTTP request latency, by route", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
IDEMPOTENT_REPLAYS = Counter("consentry_gateway_idempotent_replays_total", "Requests answered with the receipt of an earlier one (same Idempotency-Key)")
IDEMPOTENT_CONFLICTS = Counter(
    "consentry_gateway_idempotent_conflicts_total", "Repeated Idempotency-Keys answered 409: a later request changed the user's objection"
)
REFUSED = Counter("consentry_gateway_refused_events_total", "Objection events refused (422) by the validator every reader applies, by reason", ["reason"])
CONSENT_LOOKUP_FAILURES = Counter("consentry_gateway_consent_lookup_failures_total", "Consent state look-ups that failed (answered 503)")
RATE_LIMITED = Counter("consentry_gateway_rate_limited_total", "Requests answered 429, by limit", ["limit"])
IMPORTED = Counter("consentry_gateway_import_lines_total", "Lines of imports (objections, notices), by outcome", ["kind", "outcome"])
LINK_PAGES = Counter("consentry_gateway_link_pages_total", "One-click objection page views and submissions, by outcome", ["outcome"])
ADMIN_ACTIONS = Counter(
    "consentry_gateway_admin_actions_total", "Operators' actions (imports), by action and outcome (completed, stopped, refused)", ["action", "outcome"]
)
ADMIN_RECORD_FAILURES = Counter(
    "consentry_gateway_admin_action_record_failures_total",
    "Admin action records the broker did not acknowledge (a `started` one refuses the action; a final one leaves it unfinished in the trail)",
)
IMPORTED_WITHDRAWALS = Counter(
    "consentry_gateway_imported_withdrawals_total",
    "Imported withdrawals: accepted, refused (no consentry:import-withdrawals scope, or after a live objection) or overriding a live objection",
    ["outcome"],
)


def metrics_text() -> bytes:
    """This gateway's metrics: with several worker processes (GATEWAY_WORKERS > 1, launched with
    PROMETHEUS_MULTIPROC_DIR by services/gateway/__main__.py) the sum over every worker, as
    whichever worker answers the scrape; else this process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
