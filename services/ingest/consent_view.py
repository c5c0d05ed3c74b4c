"""Ingest's own copy of the consent state, for the home partitions it owns.

Fed from the consent table's changelog. A partition is `ready` once it was read up to the
high watermark seen after it was assigned; posts of a partition that is not ready wait.
Only users with an objection, something to acknowledge, or a notice are held.
"""

from __future__ import annotations

import logging

from consentry.domain.model import NO_NOTICES, EnforcementView, Interval, NoticeFacts
from consentry.wire import decode_enforcement_view

log = logging.getLogger(__name__)

# A state record we cannot read means we cannot tell: treat the user as objected.
FAIL_CLOSED: tuple[Interval, ...] = ((0, None),)
_UNREADABLE = EnforcementView(FAIL_CLOSED, (), (), NO_NOTICES)


class ConsentView:
    def __init__(self) -> None:
        # partition -> user -> (intervals, objections to purge, withdrawals to acknowledge, notice facts)
        self._users: dict[int, dict[str, EnforcementView]] = {}
        # Most users share a few country sets: keep one copy of each.
        self._country_sets: dict[frozenset[str], frozenset[str]] = {}
        self.ready: set[int] = set()

    def reset(self, partitions: set[int], keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Hold these partitions, none ready; those in `keep` keep what was read of them (their
        reading goes on where it stopped), the others start empty."""
        self._users = {p: self._users.get(p, {}) if p in keep else {} for p in partitions}
        self.ready = set()

    @property
    def partitions(self) -> set[int]:
        return set(self._users)

    def user_count(self) -> int:
        return sum(len(u) for u in self._users.values())

    def entries(self, partition: int) -> dict[str, EnforcementView]:
        """The users of `partition` with something held (intervals, pending, notice facts): one
        look-up per post on ingest's hot path. Read it, never change it."""
        return self._users[partition]

    def intervals(self, partition: int, user_id: str) -> tuple[Interval, ...]:
        entry = self._users[partition].get(user_id)
        return entry[0] if entry is not None else ()

    def notices(self, partition: int, user_id: str) -> NoticeFacts:
        entry = self._users[partition].get(user_id)
        return entry[3] if entry is not None else NO_NOTICES

    def pending(self, partition: int, user_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(objections awaiting their purge marker, withdrawals awaiting acknowledgement)."""
        entry = self._users[partition].get(user_id)
        return (entry[1], entry[2]) if entry is not None else ((), ())

    def users_with_pending(self, partition: int) -> list[str]:
        return [u for u, entry in self._users[partition].items() if entry[1] or entry[2]]

    def apply(self, partition: int, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one changelog record; return the user it concerns."""
        users = self._users.get(partition)
        if users is None or key is None:
            return None
        user_id = key.decode("utf-8", errors="replace")
        if value is None:  # tombstone
            users.pop(user_id, None)
            return user_id
        try:
            view = decode_enforcement_view(value)
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("unreadable consent state record in partition %d; user treated as objected", partition)
            users[user_id] = _UNREADABLE
            return user_id
        if view.intervals or view.pending or view.pending_withdrawals or view.notices.first_sent_us is not None:
            if view.notices.countries:
                countries = self._country_sets.setdefault(view.notices.countries, view.notices.countries)
                view = view._replace(notices=NoticeFacts(view.notices.first_sent_us, countries))
            users[user_id] = view
        else:
            users.pop(user_id, None)
        return user_id
