"""Applies a planned batch to the store exactly once per post_id.

The duplicate index (every stored post_id) is rebuilt from the store at start, so it is
always what the table holds. Re-deliveries (an upstream producer's, or ingest's after a
crash) are skipped by post_id.

Replays of training.posts itself are not left to the index: a replayed batch could be cut
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
        self.index = store.post_ids()

    def apply(self, plan: Plan, positions: Positions | None = None) -> Applied:
        """Purge, then append; `positions` go into the batch's last commit."""
        appending = bool(plan.appends)
        purged = self.store.purge_detailed(plan.purges.keys(), None if appending else positions)
        removed = purged.removed
        for ids in removed.values():
            self.index.difference_update(ids)
        fresh = [row for row in plan.appends if row["post_id"] not in self.index]
        self.store.append(fresh, positions)
        self.index.update(row["post_id"] for row in fresh)
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
