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

import time
from dataclasses import dataclass, field

from consentry.domain.purge import Plan
from services.sink.store import Positions, Purged, TrainingStore


@dataclass(frozen=True)
class Applied:
    appended: int
    duplicates: int
    purged_rows: dict[str, int]
    purge_version: int | None = None  # the purges' Delta delete (None: no row found)
    first_ingested_us: dict[str, int] = field(default_factory=dict)  # per purged user (consentry.domain.lineage)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of the de-duplication look-up and the append


class IdempotentWriter:
    def __init__(self, store: TrainingStore) -> None:
        self.store = store

    def apply(self, plan: Plan, positions: Positions | None = None) -> Applied:
        """Purge, then append; `positions` go into the batch's last commit."""
        return self.append(plan, positions, self.purge(plan, positions))

    def purge(self, plan: Plan, positions: Positions | None = None) -> Purged:
        """The batch's purges in one commit (first: the worker confirms them as soon as it is
        done, before the batch's de-duplication look-up and append). `positions` go into it only
        if the batch appends nothing."""
        return self.store.purge_detailed(plan.purges.keys(), None if plan.appends else positions)

    def append(self, plan: Plan, positions: Positions | None, purged: Purged) -> Applied:
        """The rest of the batch, after `purge`: its new posts in one commit with `positions`."""
        removed = purged.removed
        started = time.monotonic()
        stored = self.store.stored_post_ids(plan.appends)  # after the purge: what it removed may come back
        fresh = [row for row in plan.appends if row["post_id"] not in stored]
        looked_up = time.monotonic()
        self.store.append(fresh, positions)
        recorded = bool(fresh) or (bool(removed) and not plan.appends)
        if positions and not recorded:
            # Nothing to write (only duplicates, or a purge that found nothing), but the table
            # records how far it is: a batch with a purge must not be re-applied in pieces, and
            # a table behind its consumer group is a restored one (services.sink.resume).
            self.store.record_positions(positions)
        return Applied(
            appended=len(fresh),
            duplicates=len(plan.appends) - len(fresh),
            purged_rows=purged_rows(plan, purged),
            purge_version=purged.version,
            first_ingested_us=purged.first_ingested_us,
            seconds={"dedupe": looked_up - started, "append": time.monotonic() - looked_up},
        )


def purged_rows(plan: Plan, purged: Purged) -> dict[str, int]:
    """Per user of the batch's purges, how many rows the delete removed."""
    return {user: len(purged.removed.get(user, ())) for user in plan.purges}
