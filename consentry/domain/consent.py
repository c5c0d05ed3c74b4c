"""Consent-state transitions: how objections, withdrawals, receipts and notices change a
user's row.

Every function is pure. A re-delivered `objection_id` or `notice_id` changes nothing;
events may arrive in any order (imports carry their original `received_at` / `sent_at`), so
intervals and the notice version an objection answered are always derived from the whole
row sorted by time.

Bounded rows
------------
A row is one record of a compacted Kafka topic, so it must stay small (Kafka refuses a record
over `max.message.bytes`, 1 MB by default, and the consent worker then stops: fail closed)
whatever one person does: thousands of objections and withdrawals, each with a 2,000-character
reason. A row keeps its newest HISTORY_KEPT events (by time) in full, with the reason text of
the newest REASONS_KEPT only, and folds the older ones into `ConsentState.folded`, which keeps
what the decisions need:

- **Intervals.** The folded events' objection intervals, exact, and whether they end with an
  objection still active; the kept events continue from there exactly as the whole history
  would. Past FOLDED_INTERVALS_KEPT intervals the two oldest merge into one: the gap between
  them (an old withdrawal) then counts as objected. That errs closed, and only for a post
  created in that old gap and arriving after it (a post arriving during the gap was decided
  with the exact intervals, and any later objection's purge removed the user's rows anyway).
- **Duplicates.** Every kept id, and digests of the newest FOLDED_IDS_KEPT folded ids, are
  recognised: a re-delivery changes nothing. An id is re-delivered after a crash (events not
  yet committed), by a writer's retry, or by a re-run import; an id older than all of these is
  re-delivered only by a replay of `objections` from far back (lost consumer offsets). Such a
  forgotten id is recognised by its time instead: see `acknowledged_at` and the late events
  below; at worst it errs closed.
- **Late events.** An event sorting before the newest folded one (an import's historical time)
  cannot be placed exactly among folded events whose order is gone. An objection there makes
  the user objected from its time until the next folded interval, or until the first kept
  withdrawal (longer than exact, never shorter); a withdrawal there is recorded but closes no
  folded interval (erring closed: an old withdrawal imported late does not re-open old posts).
- **What is still owed.** A folded objection still waiting for its `enforced` or `purged`
  receipt stays in `folded.awaiting` (pending objections keep ingest writing their purge
  marker; the backlog gauge keeps its age) until the receipt comes. Past FOLDED_AWAITING_KEPT
  the newest are dropped, those awaiting only their purge first (the backlog keeps the oldest
  ages): a purge marker ingest writes for any pending objection left comes after every event
  the row holds, and deletes all of the user's rows, so it covers the dropped ones.

Never refusing an event is the point: a refused objection would be a leak, a refused
withdrawal a lost request. tests/unit/test_bounded_rows.py drives 10,000 events with 2,000-
character reasons through one row, checks its size and every decision against the whole
history; docs/reliability.md states the bound.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

from consentry.domain.model import (
    ENFORCED,
    FOLDED_AWAITING_KEPT,
    FOLDED_IDS_KEPT,
    FOLDED_INTERVALS_KEPT,
    HISTORY_KEPT,
    OBJECT,
    PURGED,
    REASONS_KEPT,
    TRAINED_ON_IDS_KEPT,
    WITHDRAW,
    AwaitingObjection,
    Channel,
    ConsentState,
    Folded,
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


def _sort_key(entry: HistoryEntry) -> tuple[int, str]:
    return (entry.received_at_us, entry.objection_id)


def _horizon(folded: Folded | None) -> tuple[int, str] | None:
    return (folded.until_us, folded.until_id) if folded is not None and folded.events else None


def _covered(closed: list[tuple[int, int]], start: int | None, at_us: int) -> bool:
    return (start is not None and at_us >= start) or any(s <= at_us < e for s, e in closed)


def _step(closed: list[tuple[int, int]], start: int | None, entry: HistoryEntry) -> int | None:
    """One event, in time order: an objection opens an interval, a withdrawal closes it."""
    if entry.kind == OBJECT and start is None:
        return entry.received_at_us
    if entry.kind == WITHDRAW and start is not None:
        closed.append((start, entry.received_at_us))
        return None
    return start


def _step_late(closed: list[tuple[int, int]], start: int | None, entry: HistoryEntry) -> int | None:
    """An event that sorts among folded events ("Bounded rows", late events): an objection
    makes the user objected from its time until the next folded interval (extended back to
    it) or, with none after it, until the first kept withdrawal; a withdrawal closes nothing."""
    at = entry.received_at_us
    if entry.kind != OBJECT or _covered(closed, start, at):
        return start
    for i, (s, e) in enumerate(closed):
        if s > at:
            closed[i] = (at, e)
            return start
    return at


def derive_intervals(history: tuple[HistoryEntry, ...], folded: Folded | None = None) -> tuple[Interval, ...]:
    """Objection intervals [start, end): an objection opens one, a withdrawal closes it;
    `folded` (the events folded out of the row) comes first."""
    closed: list[tuple[int, int]] = list(folded.intervals) if folded is not None else []
    start = folded.open_since_us if folded is not None else None
    horizon = _horizon(folded)
    for entry in history:
        if horizon is not None and _sort_key(entry) <= horizon:
            start = _step_late(closed, start, entry)
        else:
            start = _step(closed, start, entry)
    intervals: list[Interval] = list(closed)
    if start is not None:
        intervals.append((start, None))
    return tuple(intervals)


def pending_enforcement(history: tuple[HistoryEntry, ...], folded: Folded | None = None) -> tuple[str, ...]:
    """Objections ingest has not yet confirmed. A withdrawn one still needs its purge: posts
    created while it was active may already have been forwarded."""
    owed = tuple(a.objection_id for a in folded.awaiting if a.enforced_at_us is None) if folded is not None else ()
    return owed + tuple(e.objection_id for e in history if e.kind == OBJECT and e.enforced_at_us is None)


def pending_withdrawals(history: tuple[HistoryEntry, ...]) -> tuple[str, ...]:
    """Withdrawals ingest has not yet confirmed: until then it may still drop new posts."""
    return tuple(e.objection_id for e in history if e.kind == WITHDRAW and e.enforced_at_us is None)


def id_digest(objection_id: str) -> str:
    """How a folded objection id is remembered: 96 bits of BLAKE2b, 16 characters."""
    digest = hashlib.blake2b(objection_id.encode("utf-8", "surrogatepass"), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def was_folded(state: ConsentState | None, objection_id: str) -> bool:
    """The id is one of the row's folded events (known, but no longer kept in full)."""
    return state is not None and state.folded is not None and id_digest(objection_id) in state.folded.ids


def _bounded_awaiting(awaiting: list[AwaitingObjection]) -> tuple[AwaitingObjection, ...]:
    while len(awaiting) > FOLDED_AWAITING_KEPT:
        enforced = [i for i, a in enumerate(awaiting) if a.enforced_at_us is not None]
        # The newest first (the backlog keeps the oldest ages), those awaiting only their purge
        # before those awaiting their marker; a marker for any pending objection left covers
        # the dropped ones.
        del awaiting[enforced[-1] if enforced else -1]
    return tuple(awaiting)


def fold(folded: Folded | None, entry: HistoryEntry, now_us: int) -> Folded:
    """`folded` with one more event, the oldest the row keeps in full ("Bounded rows")."""
    folded = folded or Folded()
    closed = list(folded.intervals)
    horizon = _horizon(folded)
    if horizon is not None and _sort_key(entry) <= horizon:
        start = _step_late(closed, folded.open_since_us, entry)
        until_us, until_id = folded.until_us, folded.until_id
    else:
        start = _step(closed, folded.open_since_us, entry)
        until_us, until_id = entry.received_at_us, entry.objection_id
    merged = folded.merged
    while len(closed) > FOLDED_INTERVALS_KEPT:
        closed[0:2] = [(closed[0][0], closed[1][1])]  # the gap between them counts as objected
        merged += 1
    latest_live = folded.latest_live_us
    if entry.channel != Channel.IMPORT:
        latest_live = entry.received_at_us if latest_live is None else max(latest_live, entry.received_at_us)
    awaiting = list(folded.awaiting)
    if entry.kind == OBJECT and entry.purged_at_us is None:
        since = now_us if entry.channel == Channel.IMPORT else entry.received_at_us  # as the backlog counts it
        awaiting.append(AwaitingObjection(entry.objection_id, since, entry.enforced_at_us))
    return Folded(
        events=folded.events + 1,
        until_us=until_us,
        until_id=until_id,
        intervals=tuple(closed),
        open_since_us=start,
        merged=merged,
        ids=(*folded.ids, id_digest(entry.objection_id))[-FOLDED_IDS_KEPT:],
        latest_live_us=latest_live,
        awaiting=_bounded_awaiting(awaiting),
    )


def _rebuild(
    user_id: str, history: list[HistoryEntry], now_us: int, notices: tuple[NoticeEntry, ...] = (), folded: Folded | None = None,
    trained_on: tuple[int, tuple[str, ...]] = (0, ()),
) -> ConsentState:
    history.sort(key=_sort_key)
    excess = len(history) - HISTORY_KEPT
    for entry in history[: max(excess, 0)]:
        folded = fold(folded, entry, now_us)
    kept = history[max(excess, 0) :]
    for i in range(len(kept) - REASONS_KEPT):  # the older kept events lose their free text
        if kept[i].reason is not None:
            kept[i] = replace(kept[i], reason=None)
    ordered = tuple(with_notice_versions(kept, notices))
    return ConsentState(
        user_id,
        ordered,
        derive_intervals(ordered, folded),
        pending_enforcement(ordered, folded),
        pending_withdrawals(ordered),
        now_us,
        notices,
        folded,
        *trained_on,
    )


def acknowledged_at(state: ConsentState | None, event: ObjectionEvent) -> int:
    """When a live event takes effect: its writer's `received_at`, moved just after the user's
    latest live event when the writer's clock is behind. Events are applied in their order in
    the user's home partition (the order they were acknowledged in), so a DELETE on one gateway
    replica followed by a POST on a replica whose clock is late still ends objected. Imported
    events keep their historical time (contract, "Order of a user's events").

    A live withdrawal whose own time is at or before the row's newest folded event keeps it too
    ("Bounded rows"): it is an event of the folded past re-delivered after its id was forgotten
    (a replay of `objections`), or from a clock behind by more than the user's HISTORY_KEPT
    latest events; moved to the end, a replayed withdrawal would end a current objection, so it
    errs closed. A live objection is always moved to the end: a replayed one errs closed too."""
    if event.channel == Channel.IMPORT or state is None:
        return event.received_at_us
    folded = state.folded
    if folded is not None and folded.events and event.kind == WITHDRAW and event.received_at_us <= folded.until_us:
        return event.received_at_us
    latest_live = max((e.received_at_us for e in state.history if e.channel != Channel.IMPORT), default=None)
    if folded is not None and folded.latest_live_us is not None:
        latest_live = folded.latest_live_us if latest_live is None else max(latest_live, folded.latest_live_us)
    if latest_live is None or event.received_at_us > latest_live:
        return event.received_at_us
    return latest_live + 1


def apply_objection(state: ConsentState | None, event: ObjectionEvent, now_us: int) -> ConsentState:
    """Record an objection or a withdrawal, in the order events arrive (their partition order).
    Re-delivery of a known id returns `state` as is."""
    if state is not None and (any(e.objection_id == event.objection_id for e in state.history) or was_folded(state, event.objection_id)):
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
    if state is None:
        return _rebuild(event.user_id, history, now_us)
    return _rebuild(event.user_id, history, now_us, state.notices, state.folded, _trained_on(state))


def apply_notice(state: ConsentState | None, notice: Notice, now_us: int) -> ConsentState:
    """Record a notice sent to the user. Re-delivery of a known notice_id returns `state` as is."""
    if state is not None and any(n.notice_id == notice.notice_id for n in state.notices):
        return state
    entry = NoticeEntry(notice.notice_id, notice.notice_version, notice.channel, notice.sent_at_us, notice.country)
    notices = tuple(sorted((*(state.notices if state is not None else ()), entry), key=lambda n: (n.sent_at_us, n.notice_id)))
    if state is None:
        return _rebuild(notice.user_id, [], now_us, notices)
    return _rebuild(notice.user_id, list(state.history), now_us, notices, state.folded, _trained_on(state))


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
    folded = state.folded
    if folded is not None and folded.awaiting and not ids.isdisjoint(a.objection_id for a in folded.awaiting):
        folded = replace(folded, awaiting=_stamped(folded.awaiting, receipt, ids))
        changed |= folded != state.folded
    if not changed:
        return state
    trained_on = _trained_on(state)
    if receipt.kind == PURGED and receipt.trained_on_runs:
        trained_on = counted_runs(trained_on, receipt.trained_on_runs)
    return _rebuild(state.user_id, history, now_us, state.notices, folded, trained_on)


def _trained_on(state: ConsentState) -> tuple[int, tuple[str, ...]]:
    return state.trained_on_by, state.trained_on_ids


def counted_runs(trained_on: tuple[int, tuple[str, ...]], runs: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """The row's count of training runs that read the user's rows, with a purge's runs: a run
    already counted (its digest among the newest TRAINED_ON_IDS_KEPT) is not counted again. Two
    purges of one user name the same run only where the lineage rule over-counts (a run that read
    just before the second purge's first row), so the newest digests are enough to keep it exact."""
    count, digests = trained_on
    known = set(digests)
    added = []
    for run_id in runs:
        digest = id_digest(run_id)
        if digest not in known:
            known.add(digest)
            added.append(digest)
    return count + len(added), (*digests, *added)[-TRAINED_ON_IDS_KEPT:]


def _stamped(awaiting: tuple[AwaitingObjection, ...], receipt: Receipt, ids: set[str]) -> tuple[AwaitingObjection, ...]:
    """Folded objections awaiting a receipt, after `receipt`: `enforced` stamps them, `purged`
    settles them (the row owes nothing more for them)."""
    out = []
    for owed in awaiting:
        if owed.objection_id in ids:
            if receipt.kind == PURGED:
                continue
            if receipt.kind == ENFORCED and owed.enforced_at_us is None:
                owed = replace(owed, enforced_at_us=receipt.at_us)
        out.append(owed)
    return tuple(out)


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
    return UserStatus(user_id, is_active(state.intervals, now_us), status_of(state), state.history, state.notices, state.trained_on_by)


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
