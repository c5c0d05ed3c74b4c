"""Purge planning: turn a run of training.posts messages into what the store must do, in stream order.

A purge marker removes every row of its user stored so far, so within one batch the
user's posts that came *before* their last marker are dropped here and the store deletes
first, then appends: the same result as applying each message in turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consentry.domain.model import Invalid, PurgeMarker


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
