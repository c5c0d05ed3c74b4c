"""Topic names: the contract's, and Consentry's internal ones (listed in docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    user_keyed: bool  # partitioned by murmur2(user_id), so it must have exactly `partitions` partitions
    config: dict[str, str]


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    # The contract's topics.
    @property
    def posts(self) -> str:
        return f"{self.prefix}posts"

    @property
    def objections(self) -> str:
        return f"{self.prefix}objections"

    @property
    def training_posts(self) -> str:
        return f"{self.prefix}training.posts"

    @property
    def posts_rejected(self) -> str:
        return f"{self.prefix}posts.rejected"

    @property
    def notices(self) -> str:
        return f"{self.prefix}notices"

    # Internal topics.

    # Admin actions (the audit trail).
    @property
    def admin_actions(self) -> str:
        """Every operator's action at the gateway (who, when, what, counts), kept for ever."""
        return f"{self.prefix}consentry.admin-actions"

    @property
    def posts_by_user(self) -> str:
        """Posts re-keyed to their user's home partition when upstream used another partitioner."""
        return f"{self.prefix}consentry.posts-by-user"

    @property
    def consent_state(self) -> str:
        """The consent table's changelog: one compacted record per user (the faust table writes it)."""
        return f"{self.prefix}consentry.consent-state"

    @property
    def posts_deferred(self) -> str:
        """Posts waiting for their author's notice grace period, keyed by post_id (compacted:
        a release or a drop writes a tombstone), in the user's home partition."""
        return f"{self.prefix}consentry.posts-deferred"

    @property
    def receipts(self) -> str:
        """Enforcement receipts: ingest's `enforced`, the sink's `purged`."""
        return f"{self.prefix}consentry.receipts"

    @property
    def consent_dead_letters(self) -> str:
        """Events the consent service could not apply (objections, notices, receipts), each with
        its reason and where it was read: operators re-drive them (docs/operations.md)."""
        return f"{self.prefix}consentry.consent-dead-letters"

    # The audit trail (issue 15).
    @property
    def audit(self) -> str:
        """The hash-chained audit records (services/audit), keyed by user_id ("" for table-level
        facts), kept for ever: the evidence of every objection's enforcement."""
        return f"{self.prefix}consentry.audit"

    @property
    def drop_counts(self) -> str:
        """Per user, day and reason, how many posts ingest dropped: counts emitted periodically
        (never one record per post), read by the audit writer."""
        return f"{self.prefix}consentry.drop-counts"
    # Training-run lineage.
    @property
    def lineage(self) -> str:
        """One record per snapshot a training run opened (consentry.training), keyed by run_id, kept for ever."""
        return f"{self.prefix}consentry.lineage"

    @property
    def run_users(self) -> str:
        """Per training run, the objected users it included (the sink writes one at each purge),
        keyed by run_id and user_id, compacted, kept for ever: `GET /v1/admin/runs/{run_id}`."""
        return f"{self.prefix}consentry.run-users"

    def group(self, service: str) -> str:
        """Consumer group id of a service (prefixed like the topics)."""
        return f"{self.prefix}consentry-{service}"

    def specs(self) -> list[TopicSpec]:
        """Every topic `consentry up` creates. Retention is always explicit: Tansu only reports
        configs that were set, and an unbounded `posts` topic would keep objected users' text."""
        week = str(7 * DAY_MS)
        forever = "-1"
        # A post may be 1 MiB; its training record adds a few fields (Kafka's default limit is ~1 MB).
        big = {"retention.ms": week, "max.message.bytes": str(2 << 20)}
        return [
            TopicSpec(self.posts, False, big),
            TopicSpec(self.objections, True, {"retention.ms": forever}),  # the source of truth for objections
            TopicSpec(self.admin_actions, False, {"retention.ms": forever}),  # the audit trail of operators' actions
            TopicSpec(self.training_posts, True, big),
            TopicSpec(self.posts_rejected, False, {"retention.ms": week}),
            TopicSpec(self.notices, True, {"retention.ms": forever}),
            TopicSpec(self.posts_by_user, True, big),
            TopicSpec(self.consent_state, True, {"cleanup.policy": "compact", "retention.ms": forever}),
            TopicSpec(self.receipts, True, {"retention.ms": str(30 * DAY_MS)}),
            TopicSpec(self.audit, True, {"retention.ms": forever}),  # the evidence: kept for ever
            TopicSpec(self.drop_counts, True, {"retention.ms": str(30 * DAY_MS)}),
            TopicSpec(self.lineage, False, {"retention.ms": forever}),  # which version each training run read
            TopicSpec(self.run_users, False, {"cleanup.policy": "compact", "retention.ms": forever}),
            # Kept until an operator has re-driven them: an acknowledged event that was not applied.
            TopicSpec(self.consent_dead_letters, False, {"retention.ms": forever}),
            # Kept until released or dropped; segments roll and are compacted daily, so the text
            # of a dropped post leaves the log within days of its tombstone.
            TopicSpec(
                self.posts_deferred,
                True,
                {
                    "cleanup.policy": "compact",
                    "retention.ms": forever,
                    "max.message.bytes": str(2 << 20),
                    "segment.ms": str(DAY_MS),
                    "max.compaction.lag.ms": str(DAY_MS),
                    "delete.retention.ms": str(DAY_MS),
                },
            ),
        ]
