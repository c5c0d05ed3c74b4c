"""Ingest's own copy of the consent state, for the home partitions it owns.

Fed from the consent table's changelog. A partition is `ready` once it was read up to the
high watermark seen after it was assigned; posts of a partition that is not ready wait.
"""

from __future__ import annotations

import logging

from consentry.events import Interval, decode_enforcement_view

log = logging.getLogger(__name__)

# A state record we cannot read means we cannot tell: treat the user as objected.
FAIL_CLOSED: tuple[Interval, ...] = ((0, None),)


class ConsentView:
    def __init__(self) -> None:
        # partition -> user -> (intervals, objections to purge, withdrawals to acknowledge)
        self._users: dict[int, dict[str, tuple[tuple[Interval, ...], tuple[str, ...], tuple[str, ...]]]] = {}
        self.ready: set[int] = set()

    def reset(self, partitions: set[int]) -> None:
        self._users = {p: {} for p in partitions}
        self.ready = set()

    @property
    def partitions(self) -> set[int]:
        return set(self._users)

    def user_count(self) -> int:
        return sum(len(u) for u in self._users.values())

    def intervals(self, partition: int, user_id: str) -> tuple[Interval, ...]:
        entry = self._users[partition].get(user_id)
        return entry[0] if entry is not None else ()

    def pending(self, partition: int, user_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(objections awaiting their purge marker, withdrawals awaiting acknowledgement)."""
        entry = self._users[partition].get(user_id)
        return (entry[1], entry[2]) if entry is not None else ((), ())

    def users_with_pending(self, partition: int) -> list[str]:
        return [u for u, (_, objections, withdrawals) in self._users[partition].items() if objections or withdrawals]

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
            intervals, objections, withdrawals = decode_enforcement_view(value)
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("unreadable consent state record in partition %d; user treated as objected", partition)
            users[user_id] = (FAIL_CLOSED, (), ())
            return user_id
        if intervals or objections or withdrawals:
            users[user_id] = (intervals, objections, withdrawals)
        else:
            users.pop(user_id, None)
        return user_id
