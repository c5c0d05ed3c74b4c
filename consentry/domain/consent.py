"""Consent-state transitions: how objections, withdrawals, receipts and notices change a
user's row.

Every function is pure. A re-delivered `objection_id` or `notice_id` changes nothing;
events may arrive in any order (imports carry their original `received_at` / `sent_at`), so
intervals and the notice version an objection answered are always derived from the whole
row sorted by time.
"""

from __future__ import annotations

from dataclasses import replace

from consentry.domain.model import (
    ENFORCED,
    Channel,
    OBJECT,
    PURGED,
    WITHDRAW,
    ConsentState,
    HistoryEntry,
    Interval,
    Notice,
    NoticeEntry,
    ObjectionEvent,
    Receipt,
    Status,
    UserStatus,
)
from consentry.domain.notices import with_notice_versions


def derive_intervals(history: tuple[HistoryEntry, ...]) -> tuple[Interval, ...]:
    """Objection intervals [start, end): an objection opens one, a withdrawal closes it."""
    intervals: list[Interval] = []
    start: int | None = None
    for entry in history:
        if entry.kind == OBJECT and start is None:
            start = entry.received_at_us
        elif entry.kind == WITHDRAW and start is not None:
            intervals.append((start, entry.received_at_us))
            start = None
    if start is not None:
        intervals.append((start, None))
    return tuple(intervals)


def pending_enforcement(history: tuple[HistoryEntry, ...]) -> tuple[str, ...]:
    """Objections ingest has not yet confirmed. A withdrawn one still needs its purge: posts
    created while it was active may already have been forwarded."""
    return tuple(e.objection_id for e in history if e.kind == OBJECT and e.enforced_at_us is None)


def pending_withdrawals(history: tuple[HistoryEntry, ...]) -> tuple[str, ...]:
    """Withdrawals ingest has not yet confirmed: until then it may still drop new posts."""
    return tuple(e.objection_id for e in history if e.kind == WITHDRAW and e.enforced_at_us is None)


def _rebuild(user_id: str, history: list[HistoryEntry], now_us: int, notices: tuple[NoticeEntry, ...] = ()) -> ConsentState:
    history.sort(key=lambda e: (e.received_at_us, e.objection_id))
    ordered = tuple(with_notice_versions(history, notices))
    return ConsentState(
        user_id, ordered, derive_intervals(ordered), pending_enforcement(ordered), pending_withdrawals(ordered), now_us, notices
    )


def acknowledged_at(state: ConsentState | None, event: ObjectionEvent) -> int:
    """When a live event takes effect: its writer's `received_at`, moved just after the user's
    latest live event when the writer's clock is behind. Events are applied in their order in
    the user's home partition (the order they were acknowledged in), so a DELETE on one gateway
    replica followed by a POST on a replica whose clock is late still ends objected. Imported
    events keep their historical time (contract, "Order of a user's events")."""
    if event.channel == Channel.IMPORT or state is None:
        return event.received_at_us
    latest_live = max((e.received_at_us for e in state.history if e.channel != Channel.IMPORT), default=None)
    if latest_live is None or event.received_at_us > latest_live:
        return event.received_at_us
    return latest_live + 1


def apply_objection(state: ConsentState | None, event: ObjectionEvent, now_us: int) -> ConsentState:
    """Record an objection or a withdrawal, in the order events arrive (their partition order).
    Re-delivery of a known id returns `state` as is."""
    if state is not None and any(e.objection_id == event.objection_id for e in state.history):
        return state
    entry = HistoryEntry(
        objection_id=event.objection_id,
        kind=event.kind,
        received_at_us=acknowledged_at(state, event),
        channel=event.channel,
        reason=event.reason,
        notice_version=event.notice_version,
    )
    history = list(state.history) if state is not None else []
    history.append(entry)
    return _rebuild(event.user_id, history, now_us, state.notices if state is not None else ())


def apply_notice(state: ConsentState | None, notice: Notice, now_us: int) -> ConsentState:
    """Record a notice sent to the user. Re-delivery of a known notice_id returns `state` as is."""
    if state is not None and any(n.notice_id == notice.notice_id for n in state.notices):
        return state
    entry = NoticeEntry(notice.notice_id, notice.notice_version, notice.channel, notice.sent_at_us, notice.country)
    notices = tuple(sorted((*(state.notices if state is not None else ()), entry), key=lambda n: (n.sent_at_us, n.notice_id)))
    return _rebuild(notice.user_id, list(state.history) if state is not None else [], now_us, notices)


def apply_receipt(state: ConsentState | None, receipt: Receipt, now_us: int) -> ConsentState | None:
    """Stamp `enforced` (objections and withdrawals) or `purged` (objections) on the events a
    receipt names; the first stamp wins."""
    if state is None:
        return None
    ids = set(receipt.objection_ids)
    changed = False
    history: list[HistoryEntry] = []
    for entry in state.history:
        if entry.objection_id in ids:
            updated = entry
            if receipt.kind == ENFORCED and entry.enforced_at_us is None:
                updated = replace(entry, enforced_at_us=receipt.at_us)
            elif receipt.kind == PURGED and entry.kind == OBJECT and entry.purged_at_us is None:
                updated = replace(
                    entry,
                    purged_at_us=receipt.at_us,
                    rows_purged=receipt.rows_purged,
                    # The purge can be confirmed before ingest's own receipt lands.
                    enforced_at_us=entry.enforced_at_us or receipt.enforced_at_us or receipt.at_us,
                )
            changed |= updated is not entry
            history.append(updated)
        else:
            history.append(entry)
    if not changed:
        return state
    return _rebuild(state.user_id, history, now_us, state.notices)


def is_active(intervals: tuple[Interval, ...], now_us: int) -> bool:
    return any(end is None or end > now_us for _start, end in intervals)


def status_of(state: ConsentState | None) -> Status:
    """The user's current step: the latest event decides."""
    if state is None or not state.history:
        return Status.NONE
    latest = state.history[-1]
    if latest.kind == WITHDRAW:
        return Status.WITHDRAWN
    if latest.purged_at_us is not None:
        return Status.PURGED
    if latest.enforced_at_us is not None:
        return Status.ENFORCED
    return Status.RECEIVED


def user_status(user_id: str, state: ConsentState | None, now_us: int) -> UserStatus:
    """What `GET /v1/objections/me` shows: the current step, every event with its stamps, and
    every notice the user was sent."""
    if state is None:
        return UserStatus(user_id, False, Status.NONE)
    return UserStatus(user_id, is_active(state.intervals, now_us), status_of(state), state.history, state.notices)


def with_acknowledged(
    user_id: str, state: ConsentState | None, acknowledged: list[ObjectionEvent], now_us: int
) -> ConsentState | None:
    """The row as it will be once the events a gateway acknowledged and the table has not yet
    applied are applied: what the person is shown meanwhile."""
    for event in acknowledged:
        if event.user_id == user_id:
            state = apply_objection(state, event, now_us)
    return state


def recorded_event(state: ConsentState | None, objection_id: str) -> ObjectionEvent | None:
    """The event as the table recorded it (with its original received_at), if there."""
    if state is None:
        return None
    for entry in state.history:
        if entry.objection_id == objection_id:
            return ObjectionEvent(
                objection_id, state.user_id, entry.kind, entry.received_at_us, entry.channel, entry.reason, entry.notice_version
            )
    return None
