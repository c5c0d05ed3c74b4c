"""consentry.fencing: a group member may write while a heartbeat answered within the session
timeout vouches for it, and never after its group dropped it."""

from __future__ import annotations

from typing import NoReturn

import pytest

from consentry.fencing import GroupLease


class Fenced(Exception):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lease(clock: Clock) -> GroupLease:
    lease = GroupLease(clock)

    def fenced(why: str) -> NoReturn:
        raise Fenced(why)

    lease.on_fenced = fenced
    return lease


def test_an_unarmed_lease_lets_every_write_through() -> None:
    """The gateway and the command-line tools join no group."""
    clock = Clock()
    unarmed = lease(clock)
    clock.now += 1e6
    unarmed.check("a produce request")
    unarmed.lost("whatever")  # not a member of anything: nothing to fence
    assert unarmed.problem() is None


def test_a_worker_writes_nothing_before_its_group_answered() -> None:
    clock = Clock()
    worker = lease(clock)
    worker.arm(3.0)
    with pytest.raises(Fenced, match="no heartbeat answered"):
        worker.check("a produce request")


def test_an_answered_heartbeat_vouches_for_the_session_timeout_from_when_it_was_sent() -> None:
    clock = Clock()
    worker = lease(clock)
    worker.arm(3.0)
    worker.renewed(sent_at=100.0)
    clock.now = 102.9
    worker.check("a produce request")
    worker.renewed(sent_at=101.0)  # answered late: the broker's clock started no earlier than the send
    worker.renewed(sent_at=99.0)  # an older answer arriving last never shortens the lease
    clock.now = 103.99
    worker.check("a produce request")
    clock.now = 104.0
    with pytest.raises(Fenced, match=r"session timeout \(3 s, 0.0 s over\)"):
        worker.check("a produce request to ['t.training.posts']")


def test_a_worker_frozen_past_its_session_is_fenced_at_its_next_write() -> None:
    """SIGSTOP: nothing renewed while it slept, however short its last check was before."""
    clock = Clock()
    worker = lease(clock)
    worker.arm(10.0)
    worker.renewed(sent_at=100.0)
    clock.now += 60
    with pytest.raises(Fenced, match="a Delta append"):
        worker.check("a Delta append")


def test_a_member_its_group_dropped_stops_at_once_and_never_writes_again() -> None:
    clock = Clock()
    worker = lease(clock)
    worker.arm(3.0)
    worker.renewed(sent_at=100.0)
    with pytest.raises(Fenced, match="generation 7"):
        worker.lost("group g, generation 7, member m")
    worker.renewed(sent_at=100.5)  # a later answer (a new generation) does not clear it
    assert "generation 7" in (worker.problem() or "")


def test_a_member_that_left_its_group_stops_only_if_it_writes_afterwards() -> None:
    """Its own LeaveGroup at shutdown: nothing to fence unless something is still to be sent."""
    clock = Clock()
    worker = lease(clock)
    worker.arm(3.0)
    worker.renewed(sent_at=100.0)
    worker.lost("group g, generation 7, member m, left", stop=False)
    with pytest.raises(Fenced, match="left"):
        worker.check("a produce request")
