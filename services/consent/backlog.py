"""What the consent worker knows about the promise, as gauges: how many users its table
holds and how long the oldest objection has waited for its purge. Pure: no faust here.

When does an objection's purge clock start?
- a live objection (web, app, email, api): at its `received_at`, the moment the gateway
  answered 202;
- an imported historical objection (channel `import`): when the consent worker recorded
  it, not its original `received_at` (which can be years old; the system could not purge
  before it knew). That moment is the row's `updated_at` when the index first sees the
  objection: exact when it is recorded live; after a restart the index is rebuilt from the
  table and the row's `updated_at` is its *last* change (usually the enforcement receipt,
  seconds after the import), so the age of an imported objection can be understated by
  that much after a restart, never overstated.

An objection counts until its `purged` receipt is stamped, withdrawn or not: a withdrawn
objection still needs its purge (posts created while it was active may be stored).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from consentry.domain.model import OBJECT, Channel, ConsentState

# A row holds an unpurged objection only if its encoding has `"purged_at":null`
# (consentry.wire.encode_consent_state writes that key for every objection, and for every
# folded one still awaiting a receipt).
UNPURGED_MARK = b'"purged_at":null'


def unpurged_since(state: ConsentState) -> dict[str, int]:
    """{objection_id: when its purge clock started (µs)} for the objections not yet purged,
    folded ones included."""
    owed = {a.objection_id: a.since_us for a in state.folded.awaiting} if state.folded is not None else {}
    return owed | {
        entry.objection_id: state.updated_at_us if entry.channel == Channel.IMPORT else entry.received_at_us
        for entry in state.history
        if entry.kind == OBJECT and entry.purged_at_us is None
    }


class PurgeBacklog:
    """Unpurged objections of this worker's users, and the oldest of them.

    A heap with lazy deletion gives the oldest in O(log n); it is compacted when stale
    entries outnumber live ones, so memory stays proportional to the backlog.
    """

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, int]] = {}
        self._heap: list[tuple[int, str, str]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._by_user.clear()
        self._heap.clear()
        self._count = 0

    def update(self, state: ConsentState) -> None:
        """Take a user's new row into account. A known objection keeps its start."""
        current = unpurged_since(state)
        known = self._by_user.get(state.user_id, {})
        merged = {oid: known.get(oid, since) for oid, since in current.items()}
        self._count += len(merged) - len(known)
        if merged:
            self._by_user[state.user_id] = merged
        else:
            self._by_user.pop(state.user_id, None)
        for oid, since in merged.items():
            if oid not in known:
                heapq.heappush(self._heap, (since, state.user_id, oid))
        if len(self._heap) > 2 * self._count + 1024:
            self._compact()

    def oldest_us(self) -> int | None:
        heap = self._heap
        while heap:
            since, user, oid = heap[0]
            if self._by_user.get(user, {}).get(oid) == since:
                return since
            heapq.heappop(heap)
        return None

    def age_seconds(self, now_us: int) -> float:
        """Age of the oldest unpurged objection; 0 when every objection is purged."""
        oldest = self.oldest_us()
        return 0.0 if oldest is None else max(now_us - oldest, 0) / 1e6

    def _compact(self) -> None:
        self._heap = [(since, user, oid) for user, ids in self._by_user.items() for oid, since in ids.items()]
        heapq.heapify(self._heap)


class ConsentWatch:
    """The worker's consent gauges, kept up to date by every table write and rebuilt from
    the table when faust has recovered the partitions this worker owns."""

    def __init__(self) -> None:
        self.users = 0
        self.backlog = PurgeBacklog()

    def on_write(self, before: ConsentState | None, after: ConsentState) -> None:
        if before is None:
            self.users += 1
        self.backlog.update(after)

    def rebuild(self, rows: Iterable[tuple[bytes, bytes]], decode) -> None:  # type: ignore[no-untyped-def]
        """Count the rows and index their unpurged objections. Only rows whose bytes show an
        unpurged objection are decoded: one pass over the keys, like faust's own recovery."""
        users = 0
        self.backlog.clear()
        for _key, raw in rows:
            users += 1
            if raw is not None and UNPURGED_MARK in raw:
                self.backlog.update(decode(raw))
        self.users = users
