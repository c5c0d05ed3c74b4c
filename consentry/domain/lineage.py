"""Training-run lineage: which runs read a table version that still held a user's rows.

A trainer reads the training store through the reader API (consentry.training), which records
one `RunRead` per snapshot on `consentry.lineage`: the run, the Delta version it pinned and when
that version was committed. At a purge the sink knows the purge's own version and the earliest
`ingested_at` of the rows it deleted; a run read those rows when it read a version below the
purge's that was committed once the first of them was stored:

    run.version < purge_version  and  run.committed_at >= first_ingested_at - margin

`ingested_at` is ingest's clock and a commit time the sink's: `margin_us` allows for the two
hosts' clocks. The rule errs towards counting a run: a run that read a version committed in the
margin, or between ingest stamping the first row and the sink committing it (the sink's batch
time), is counted though its version may not hold the rows yet. It never misses one that read
them while the clocks differ by less than the margin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunRead:
    """One snapshot a training run opened (a record of `consentry.lineage`)."""

    run_id: str
    version: int  # the Delta version it pinned
    committed_at_us: int  # when that version was committed (the table's log)
    read_at_us: int  # when the run opened it (the trainer's clock)
    rows: int  # rows in that version
    table: str  # the table's URI


def runs_that_read(reads: Iterable[RunRead], purge_version: int, first_ingested_us: int | None, margin_us: int) -> tuple[str, ...]:
    """The runs (sorted, each once) that read a version still holding the rows a purge at
    `purge_version` deleted, the first of which was ingested at `first_ingested_us` (None: the
    purge deleted nothing, so no run read anything of it)."""
    if first_ingested_us is None:
        return ()
    since = first_ingested_us - margin_us
    return tuple(sorted({r.run_id for r in reads if r.version < purge_version and r.committed_at_us >= since}))
