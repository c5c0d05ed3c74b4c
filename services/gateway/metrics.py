from prometheus_client import Counter, Histogram

OBJECTIONS = Counter("consentry_gateway_objections_total", "Objection events acknowledged by the broker", ["kind", "channel"])
PUBLISH_FAILURES = Counter("consentry_gateway_publish_failures_total", "Objections answered 503: the broker did not acknowledge")
REQUESTS = Counter("consentry_gateway_requests_total", "HTTP requests, by route and status", ["route", "status"])
LATENCY = Histogram(
    "consentry_gateway_request_seconds", "HTTP request latency, by route", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
