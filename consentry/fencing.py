"""A group member writes only while the group still counts it as a member.

A worker frozen longer than its session timeout (SIGSTOP, a paused VM, a stop-the-world
pause) is expelled from its consumer group; its partitions go to another worker, which
reads again from the last committed offsets and writes its own results. When the frozen
worker wakes, it still holds what it decided before: changelog rows of the consent table,
posts ingest had found eligible, a Delta commit the sink was about to make. Written now,
they land *after* the new owner's, and on a compacted changelog the stale row is the one
that survives: an acknowledged objection erased for good, or a post forwarded after its
user's purge marker. Nothing it wrote can be committed (its offset commits fail), but
nothing has to be committed to do that harm.

The lease: the group coordinator counts a member alive for `session_timeout` after a
heartbeat it answered. A heartbeat (or a SyncGroup) answered without error, *sent* at local
time t, proves the member alive until at least t + session_timeout on the broker's clock.
Every write a worker makes (a Kafka produce request, a Delta commit) first checks that the
lease has not run out, and a worker whose group says it is no longer a member
(`UnknownMemberId`, `IllegalGeneration`) stops at once: in both cases the process ends
(exit 70, before any commit), and its restart reads again from the committed offsets.
Stopping, not waiting: what the worker holds was decided while it was not a member, and
only a restart forgets it.

The residual window is the time between the check and the bytes leaving the process (one
call, no I/O in between). On Apache Kafka, transactional producers fenced by their epoch
close it too (docs/reliability.md, "Zombies"); the embedded broker has none.

`LEASE` is the process's one lease: armed by the worker that joins a group
(consentry.patches.install_group_fencing), checked by every writer, inert when unarmed
(command-line tools, the gateway).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE, like the consent service's fail-closed stop


class GroupLease:
    """Until when this process may still write for the partitions its group gave it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # renewed from faust's consumer thread, checked from the event loop
        self._session: float | None = None
        self._until = float("-inf")
        self._lost: str | None = None
        self.on_fenced: Callable[[str], NoReturn] = _exit

    @property
    def armed(self) -> bool:
        return self._session is not None

    def arm(self, session_timeout_s: float) -> None:
        """The process is about to join a group with this session timeout."""
        with self._lock:
            self._session = session_timeout_s

    def renewed(self, sent_at: float) -> None:
        """A heartbeat or SyncGroup sent at `sent_at` (this lease's clock) was answered without error."""
        with self._lock:
            if self._session is not None:
                self._until = max(self._until, sent_at + self._session)

    def lost(self, why: str, stop: bool = True) -> None:
        """The group no longer counts this process as a member: it must not write again. With
        `stop` (the group expelled it) the process ends now; without (it left the group
        itself, shutting down) only a later write ends it."""
        with self._lock:
            if self._session is None or self._lost is not None:
                return
            self._lost = why
        if stop:
            self.on_fenced(f"the consumer group no longer counts this worker as a member ({why})")

    def problem(self) -> str | None:
        """Why this process may not write now, or None."""
        with self._lock:
            if self._session is None:
                return None
            if self._lost is not None:
                return f"the consumer group no longer counts this worker as a member ({self._lost})"
            late = self._clock() - self._until
            if late >= 0:
                return (f"no heartbeat answered for longer than the session timeout ({self._session:g} s, "
                        f"{late:.1f} s over): the group has given its partitions to another worker")
        return None

    def check(self, what: str) -> None:
        """Before `what` leaves the process: stop it if the lease ran out."""
        problem = self.problem()
        if problem is not None:
            self.on_fenced(f"{what}: {problem}")


def _exit(why: str) -> NoReturn:
    # Not an exception: faust answers an agent's exception by committing, and a produce
    # request is built on aiokafka's sender task, whose failure would only fail the batch.
    log.critical("fenced: %s; stopping now, before any write or commit (the restart reads again "
                 "from the committed offsets)", why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


LEASE = GroupLease()
