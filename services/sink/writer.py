"""Applies a planned batch to the store exactly once per post_id.

The duplicate index (every stored post_id) is rebuilt from the store at start, so it is
always what the table holds: replaying any suffix of training.posts after a crash gives
the same table (a purge removes its user's ids from the index; appends skip known ids).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.sink.plan import Plan
from services.sink.store import TrainingStore


@dataclass(frozen=True)
class Applied:
    appended: int
    duplicates: int
    purged_rows: dict[str, int]


class IdempotentWriter:
    def __init__(self, store: TrainingStore) -> None:
        self.store = store
        self.index = store.post_ids()

    def apply(self, plan: Plan) -> Applied:
        removed = self.store.purge(plan.purges.keys())
        for ids in removed.values():
            self.index.difference_update(ids)
        fresh = [row for row in plan.appends if row["post_id"] not in self.index]
        self.store.append(fresh)
        self.index.update(row["post_id"] for row in fresh)
        return Applied(
            appended=len(fresh),
            duplicates=len(plan.appends) - len(fresh),
            purged_rows={user: len(removed.get(user, ())) for user in plan.purges},
        )
