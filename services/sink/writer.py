"""Applies a planned batch to the store exactly once per post_id.

No index of the table is kept (it grew with the table, and a sink restarting on hundreds of
millions of posts ran out of memory rebuilding it). Re-deliveries (an upstream producer's,
or ingest's after a crash) are looked up in the table itself, in the batch's buckets only
(`TrainingStore.stored_post_ids`): a re-delivered post is the same user's, so in the same
bucket, whatever else the re-delivery changed.

Replays of training.posts itself are not left to that look-up: a replayed batch could be cut
differently, so a post that the first pass dropped because its user's purge marker came
later in the same batch would be appended again until the marker is re-applied. Each batch
therefore records the positions it applied in the same Delta commit (see
`TrainingStore.applied_position`); the worker never re-applies what a commit recorded.
"""

from dataclasses import dataclass, field

from consentry.domain.purge import Plan
from services.sink.store import Positions, TrainingStore


@dataclass(frozen=True)
class Applied:
    appended: int
    duplicates: int
    purged_rows: dict[str, int]
    purge_version: int | None = None  # the purges' Delta delete (None: no row found)
    first_ingested_us: dict[str, int] = field(default_factory=dict)  # per purged user (consentry.domain.lineage)


class IdempotentWriter:
    def __init__(self, store: TrainingStore) -> None:
        self.store = store

    def apply(self, plan: Plan, positions: Positions | None = None) -> Applied:
        """Purge, then append; `positions` go into the batch's last commit."""
        appending = bool(plan.appends)
        purged = self.store.purge_detailed(plan.purges.keys(), None if appending else positions)
        removed = purged.removed
        stored = self.store.stored_post_ids(plan.appends)  # after the purge: what it removed may come back
        fresh = [row for row in plan.appends if row["post_id"] not in stored]
        self.store.append(fresh, positions)
        recorded = bool(fresh) or (bool(removed) and not appending)
        if positions and not recorded:
            # Nothing to write (only duplicates, or a purge that found nothing), but the table
            # records how far it is: a batch with a purge must not be re-applied in pieces, and
            # a table behind its consumer group is a restored one (services.sink.resume).
            self.store.record_positions(positions)
        return Applied(
            appended=len(fresh),
            duplicates=len(plan.appends) - len(fresh),
            purged_rows={user: len(removed.get(user, ())) for user in plan.purges},
            purge_version=purged.version,
            first_ingested_us=purged.first_ingested_us,
        )
