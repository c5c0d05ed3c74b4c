"""Purge planning: turn a run of training.posts messages into what the store must do, in stream order.

A purge marker removes every row of its user stored so far, so within one batch the
user's posts that came *before* their last marker are dropped here and the store deletes
first, then appends: the same result as applying each message in turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consentry.domain.model import Interval, Invalid, PurgeMarker


@dataclass(frozen=True)
class Purge:
    user_id: str
    objection_ids: tuple[str, ...]
    marked_at_us: int


@dataclass
class Plan:
    purges: dict[str, Purge] = field(default_factory=dict)
    appends: list[dict[str, Any]] = field(default_factory=list)  # unique post_ids, stream order
    invalid: list[Invalid] = field(default_factory=list)


def plan_batch(messages: list[dict[str, Any] | PurgeMarker | Invalid]) -> Plan:
    """`messages`: training.posts as consentry.wire.parse_training_message reads them (an
    accepted post as a row of the store's columns, a purge marker, or why it is refused)."""
    plan = Plan()
    parsed: list[dict[str, Any]] = []
    last_purge_at: dict[str, int] = {}
    for message in messages:
        if type(message) is Invalid:
            plan.invalid.append(message)
        elif type(message) is PurgeMarker:
            previous = plan.purges.get(message.user_id)
            ids = message.objection_ids if previous is None else tuple(dict.fromkeys(previous.objection_ids + message.objection_ids))
            marked = message.marked_at_us if previous is None else min(previous.marked_at_us, message.marked_at_us)
            plan.purges[message.user_id] = Purge(message.user_id, ids, marked)
            last_purge_at[message.user_id] = len(parsed)
        else:
            parsed.append(message)
    seen: set[str] = set()
    for index, row in enumerate(parsed):
        cutoff = last_purge_at.get(row["user_id"])
        if cutoff is not None and index < cutoff:
            continue  # stored before the user's purge in this same batch: purged with it
        if row["post_id"] in seen:
            continue
        seen.add(row["post_id"])
        plan.appends.append(row)
    return plan


# ---------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class ObjectionFacts:
    """What reconciliation needs of one objection in a user's history."""

    received_at_us: int
    imported: bool
    enforced_at_us: int | None  # when ingest wrote its purge marker (ingest's clock)
    purged: bool  # the sink confirmed the marker's Delta delete


def reconcile_rules(
    intervals: tuple[Interval, ...], objections: tuple[ObjectionFacts, ...], at_us: int, grace_us: int, margin_us: int
) -> tuple[int | None, tuple[Interval, ...]]:
    """What must be gone from the training store for one user, for a reconciliation pass at
    `at_us`: (the horizon: no row ingested before it may remain, None: none yet; the withdrawn
    objections' intervals no row created inside may remain in).

    Only objections whose purge is due count: once the sink confirmed it, or `grace_us` after
    its marker was written (a marker lost on the way is never confirmed), or, for a live
    objection ingest never enforced, `grace_us` after it was received. A purge still on its
    way is its marker's to do, not a leak. Once due, every row ingested before the marker
    (which deletes them all) and every row ingested while its interval lasted (ingest drops
    those) must be gone, and so must every post created inside its interval if it was
    withdrawn (never eligible). `margin_us` allows for the hosts' clocks and for a withdrawal
    on its way to ingest: a post stored just after a withdrawal is never taken for a leak."""
    horizon: int | None = None
    closed: list[Interval] = []
    for objection in objections:
        anchor = objection.enforced_at_us
        if anchor is None and not objection.imported:
            anchor = objection.received_at_us
        if anchor is None or (not objection.purged and anchor > at_us - grace_us):
            continue
        end = anchor
        for start, stop in intervals:
            if start <= objection.received_at_us and (stop is None or objection.received_at_us < stop):
                end = at_us if stop is None or stop > at_us else stop
                if stop is not None and (start, stop) not in closed:
                    closed.append((start, stop))
                break
        candidate = max(anchor, end) - margin_us
        horizon = candidate if horizon is None else max(horizon, candidate)
    return horizon, tuple(closed)
