"""Where the sink reads a partition of training.posts from, once assigned: a pure decision.

The table is the truth of what was applied: every Delta commit records, per partition, the
next offset to apply (`TrainingStore.applied_position`). The consumer group's committed
offset is only where the last reader stopped. They agree in normal operation (the table's
position is recorded by every flush, then the offset committed), and differ when:

- the process died between its Delta commit and its offset commit: the table is ahead, the
  group re-reads a little, and what the table already holds is only re-confirmed;
- the table went back in time (restored from a backup, or created again empty): the table is
  behind, and everything between must be applied again, purge markers above all, else rows
  purged since the backup come back and stay;
- the topic was deleted and created again: the table's positions name records of a log that
  no longer exists (the record it ended with is not there any more): they are ignored;
- retention deleted records the table still needs (the table, or the whole sink, was behind
  for longer than `training.posts` keeps records): they cannot be replayed. The sink reads
  from the oldest record left and reports how many were lost; reconciliation
  (services.sink.reconcile) purges what their markers would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    GROUP = "group"  # the table agrees with the group, or is ahead of it: read from the group's offset
    TABLE = "table"  # the group committed nothing (its offsets expired, a new group): go on from the table
    NEW = "new"  # nothing recorded, nothing committed: a new deployment reads from the oldest record
    REWIND = "rewind"  # the table is behind the group (a restored table): replay from the table's position
    REFILL = "refill"  # the table records nothing but the group committed: a table created again, replay all
    RECREATED_TOPIC = "recreated_topic"  # the table's positions belong to an earlier incarnation of the topic
    GAP = "gap"  # the table needs records retention deleted: read from the oldest left, report the rest


@dataclass(frozen=True)
class Resume:
    seek: int | None  # offset to read from; None: the consumer group's committed offset (or its reset)
    applied: int  # offsets below this are in the table already: re-confirmed, never applied again
    missing: int  # records the table needs that the topic no longer holds
    reason: Reason


def resume_point(table: int | None, verified: bool | None, committed: int | None, log_start: int) -> Resume:
    """`table`: the position the table recorded for the partition (None: none); `verified`:
    whether the partition still holds, at `table - 1`, the record that position ends with
    (None: it cannot tell, that offset is below `log_start`); `committed`: the group's
    committed offset (None: none); `log_start`: the partition's oldest offset still held."""
    if table is None:
        if committed is None:
            return Resume(None, 0, 0, Reason.NEW)
        # Something was applied to some table before (the group committed), this one holds
        # nothing of the partition: replay all that is left; what is not left is missing.
        return Resume(log_start, 0, log_start, Reason.REFILL)
    if verified is False:
        return Resume(None, 0, 0, Reason.RECREATED_TOPIC)
    if table < log_start:
        return Resume(log_start, table, log_start - table, Reason.GAP)
    if committed is None or committed > table:
        # Behind the group: replay from the table. No commit at all (the group's offsets
        # expired, or a new group name): the table knows where to go on.
        return Resume(table, table, 0, Reason.REWIND if committed is not None else Reason.TABLE)
    return Resume(None, table, 0, Reason.GROUP)
