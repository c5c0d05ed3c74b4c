from prometheus_client import Counter, Gauge

from consentry.build import BUILD_INFO  # noqa: F401  (consentry_build_info, in every service)
from consentry.lag import CONSUMER_LAG as LAG  # noqa: F401  (shared by every service)

POSTS_IN = Counter("consentry_ingest_posts_in_total", "Posts read, by source topic", ["source"])
ACCEPTED = Counter("consentry_ingest_accepted_total", "Posts forwarded to training.posts")
DROPPED = Counter("consentry_ingest_dropped_total", "Posts kept out of training, by reason", ["reason"])
REJECTED = Counter("consentry_ingest_rejected_total", "Invalid posts sent to posts.rejected, by reason", ["reason"])
REPARTITIONED = Counter("consentry_ingest_repartitioned_total", "Posts moved to their user's home partition")
PURGE_MARKERS = Counter("consentry_ingest_purge_markers_total", "Purge markers written to training.posts")
CONSENT_USERS = Gauge("consentry_ingest_consent_users", "Users with consent state held by this worker")
PARTITIONS_READY = Gauge("consentry_ingest_partitions_ready", "Home partitions whose consent state is loaded")
ASSIGNMENTS = Counter("consentry_ingest_assignments_total", "Partition assignments received, each followed by a load of their consent state (a count that keeps growing: rebalances)")
PARTITIONS_HELD = Gauge("consentry_ingest_partitions_held", "Owned partitions whose posts wait for consent state")
ERRORS = Counter("consentry_ingest_errors_total", "Errors, by stage", ["stage"])

# The notice rule: deferred posts are not drops; each ends released or dropped.
DEFERRED = Counter("consentry_ingest_deferred_total", "Posts deferred at their first decision: their author's notice grace period has not ended")
DEFERRED_POSTS = Gauge("consentry_ingest_deferred_posts", "Posts this worker holds until their author's notice grace period ends")
DEFERRED_BYTES = Gauge("consentry_ingest_deferred_bytes", "Memory estimate of the deferred posts' index (their bodies stay in consentry.posts-deferred; CONSENTRY_DEFERRED_MAX_POSTS bounds it)")
DEFERRED_UNINDEXED = Gauge("consentry_ingest_deferred_unindexed", "Deferred posts waiting unindexed in consentry.posts-deferred (the index was full): not released until indexed again")
DEFERRED_RELEASED = Counter("consentry_ingest_deferred_released_total", "Deferred posts released into training.posts")
DEFERRED_DROPPED = Counter("consentry_ingest_deferred_dropped_total", "Deferred posts dropped: their author objected while they waited")
USERS_WAITING = Gauge("consentry_ingest_users_waiting_for_notice", "Users with deferred posts: no notice yet, or its grace period not over")
DEFERRED_FULL = Gauge("consentry_ingest_deferred_full", "1 while the deferred posts' index is full: newly deferred posts wait unindexed (other posts flow)")
DROP_COUNT_RECORDS = Counter("consentry_ingest_drop_count_records_total", "Per-user-day drop counts emitted to consentry.drop-counts (the audit trail)")
