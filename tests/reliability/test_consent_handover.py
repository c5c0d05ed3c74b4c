"""A consent worker that leaves cleanly (SIGTERM) while objections keep arriving hands its
partitions over without losing any: every acknowledged event is applied by the next owner.

Seen in the scale-out races (docs/reliability.md): a withdrawal acknowledged while the only
consent worker owning its partition was stopping was in no changelog record, the event after
it was applied by the next owner."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import httpx
import orjson
import pytest

from tests.reliability.test_crashes import users_in
from tests.reliability.workload import trace_user
from tests.support import ledger
from tests.support.system import System
from tests.support.wait import eventually


async def file_events(system: System, users: list[str], stop: threading.Event, acknowledged: dict[str, set[str]]) -> None:
    """Objections and withdrawals in turn, one user after the other, until told to stop."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        n = 0
        while not stop.is_set():
            user = users[n % len(users)]
            kind = (n // len(users)) % 2
            response = await (client.post("/v1/objections", headers=system.auth(user)) if kind == 0 else
                              client.delete("/v1/objections/me", headers=system.auth(user)))
            assert response.status_code == 202, response.text
            acknowledged.setdefault(user, set()).add(response.json()["objection_id"])
            n += 1
            await asyncio.sleep(0.01)  # pacing: about 50 events a second


class HandOverLost(AssertionError):
    """Acknowledged events that no consent worker holds after a plain hand-over."""


@pytest.mark.reliability  # about 40 s for both orders: in make test-reliability, to keep make test under 15 minutes
@pytest.mark.parametrize("order", ["joins-while-leaving", "joins-after"])
def test_a_consent_worker_leaving_under_load_hands_over_every_event(scaled_system: System, order: str) -> None:
    successor = "consent-2"
    system = scaled_system
    system.create_topics()
    system.start("consent", "gateway")
    users = [f"handover-{n}" for n in range(12)]
    acknowledged: dict[str, set[str]] = {}
    stop = threading.Event()
    load = threading.Thread(target=lambda: asyncio.run(file_events(system, users, stop, acknowledged)), daemon=True)
    load.start()
    eventually(lambda: sum(map(len, acknowledged.values())) >= 100, timeout=60, what="events flowing")
    if order == "joins-while-leaving":
        system.start(successor, wait=False)  # a new machine joins (empty data directory)...
        system.leave("consent")  # ...while the first worker leaves: events keep arriving meanwhile
    else:
        system.leave("consent")  # no consent worker for a while: events keep arriving
        system.start(successor, wait=False)
    system.wait_ready(successor)
    eventually(lambda: sum(map(len, acknowledged.values())) >= 400, timeout=60, what="events flowing to the successor")
    stop.set()
    load.join(60)

    def missing() -> dict[str, set[str]]:
        return {u: lost for u, ids in acknowledged.items()
                if (lost := ids - {i["objection_id"] for i in system.consent_status(u)["history"]})}

    try:
        eventually(lambda: not missing(), timeout=60, what="every acknowledged event in the consent state")
    except AssertionError:
        lost = missing()
        traces = {user: trace_user(system, user) for user in lost}
        raise HandOverLost(f"{sum(map(len, lost.values()))} acknowledged events never applied: {lost}; their users' records: {traces}") from None
    ledger.record("nothing lost", **{"consent hand-overs under load": 1, "events across them": sum(map(len, acknowledged.values()))})


RELEASE_AFTER_S = 15.0  # the event in flight is let go then at the latest


def changelog_rows(system: System, user: str) -> list[tuple[int, dict]]:
    """The user's consent changelog records, in order: (offset, row)."""
    key = user.encode()
    return [(r.offset, orjson.loads(r.value)) for r in system.read(system.topics.consent_state) if r.key == key and r.value]


def stamped(row: dict, objection_id: str) -> bool:
    return any(h["objection_id"] == objection_id and (h.get("enforced_at_us") or h.get("enforced_at")) for h in row["history"])


def enforced(system: System, user: str, objection_id: str) -> bool:
    """Whether a running consent worker (itself, or the owner it routes to) holds the event enforced;
    False while none can answer."""
    for instance in system.running("consent"):
        try:
            response = httpx.get(f"{system.url(instance)}/v1/user/status", params={"user_id": user}, timeout=2)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            return any(h["objection_id"] == objection_id and h.get("enforced_at") for h in response.json()["history"])
    return False


@pytest.mark.quick
def test_a_stopping_consent_worker_finishes_its_event_before_a_successor_takes_its_partition(scaled_system: System) -> None:
    """A consent worker told to stop (SIGTERM) with an event in flight, while a new worker joins:
    the group rebalances during the stop. The event's changelog record must be written and
    flushed before its partition moves, so that the successor recovers it, and the stopping
    worker must write nothing after that.

    faust-streaming 0.15.3 `App._on_partitions_revoked` returns at once when the app is stopping
    (`_on_rebalance_when_stopped`), without waiting for the event in flight or flushing its
    records: the successor recovered the table without the event, applied it again (the old
    owner's offset commit was discarded) with ingest's `enforced` receipt; then the stopping
    worker finished the event and wrote its own row for the user, without the stamp, over the
    successor's (the receipt lost while workers leave and join, docs/reliability.md).
    `consent.before_apply` holds the event in flight until the successor has stamped it, or
    RELEASE_AFTER_S (a fixed worker makes the successor wait for the stop instead)."""
    system = scaled_system
    system.create_topics()
    system.start("gateway", "ingest")
    release = system.data_dir / "release-the-event-in-flight"
    system.start("consent", env={"CONSENTRY_FAILPOINTS": f"consent.before_apply@{release}"})
    [user] = users_in(system, {0}, 1, "stopping")  # partition 0: the first one the assignor moves to a newcomer
    objection_id = system.object(user)["objection_id"]
    eventually(lambda: "failpoint consent.before_apply: holding" in system.log("consent"), timeout=30, interval=0.05,
               what="the first worker holding the objection in flight")
    stopping = system.processes.pop("consent")
    os.killpg(stopping.pid, signal.SIGTERM)  # it stops while the event is in flight...
    system.start("consent-2", wait=False)  # ...and a new worker joins meanwhile
    try:
        eventually(lambda: enforced(system, user, objection_id), timeout=RELEASE_AFTER_S, what="the successor stamping the objection")
    except AssertionError:
        pass  # a fixed worker holds its partition until the event is done: the successor waits for the stop
    release.touch()
    assert stopping.wait(60) == 0, "the stopping worker did not end cleanly"
    system.wait_ready("consent-2")
    first_assignment = system.log("consent-2").split("Worker ready", 1)[0]
    assert "opening partition 0 " in first_assignment, "the successor did not take partition 0 from the stopping worker: nothing tested"
    eventually(lambda: any(h["objection_id"] == objection_id and h.get("enforced_at") for h in system.consent_status(user)["history"]),
               timeout=60, what="the objection enforced in the consent state")

    rows = changelog_rows(system, user)
    first = next((n for n, (_, row) in enumerate(rows) if stamped(row, objection_id)), len(rows))
    taken_back = [offset for offset, row in rows[first:] if not stamped(row, objection_id)]
    assert not taken_back, (f"the stamp of {objection_id} was in the changelog, then records without it were written at "
                            f"offsets {taken_back}: {trace_user(system, user)}")
    assert first < len(rows), f"no changelog record holds the stamp of {objection_id}: {trace_user(system, user)}"
    ledger.record("nothing lost", **{"consent hand-overs during a stop": 1})



def partition_offset(system: System, instance: str, metric: str, topic: str, partition: int) -> float:
    """One of faust's per-partition gauges on a consent worker's /metrics (-1 while absent)."""
    values = system.metrics(instance).get(f"consentry_faust_{metric}", {})
    return next((v for k, v in values.items() if dict(k) == {"topic": topic, "partition": str(partition)}), -1)


@pytest.mark.reliability  # about 60 s (two worker starts and a session timeout): over make test's budget
def test_a_worker_taking_over_a_backlog_applies_all_of_it(system: System) -> None:
    """A consent worker takes over partition 0, whose events have waited since the last
    commit (a hand-over under load). It must apply every one of them, and commit none it has
    not applied.

    faust-streaming 0.15.3, once the table is recovered (faust/tables/recovery.py
    `on_recovery_completed`), resumes the source partitions, seeks them to the committed
    offsets (`Consumer.perform_seek`), then calls `flow_control.resume()`, which clears the
    agent's queue. Records delivered meanwhile are cleared unapplied, and nothing fetches them
    again. `perform_seek` also resets each read offset to the committed offset, below the
    records already delivered: the next record looks like a gap over them, and `_add_gap`
    counts them (and that record) as acknowledged, so the commits pass the cleared events: the
    plain hand-over's lost withdrawal (docs/reliability.md). A stop clears the queue too, with
    the same effect. Failpoints hold the window open: `consent.after_seek_to_committed` (the
    seek done, the read offsets not reset) and `consent.before_apply:4` (the backlog's 4th
    event in flight, so the 5th waits in the queue)."""
    system.create_topics()
    system.start("gateway", "consent")
    objections = system.topics.objections
    users = users_in(system, {0}, 9, "takeover")
    acknowledged = {user: system.object(user)["objection_id"] for user in users[:3]}  # objections[0]@0..2

    def missing(instance: str) -> dict[str, str]:
        return {u: i for u, i in acknowledged.items() if i not in {h["objection_id"] for h in status(system, instance, u)["history"]}}

    eventually(lambda: not missing("consent"), timeout=60, what="the first three applied")
    system.leave("consent")  # commits objections[0] at 3
    acknowledged.update({user: system.object(user)["objection_id"] for user in users[3:8]})  # the backlog, @3..7
    seek_window, in_flight = system.data_dir / "reset-the-read-offsets", system.data_dir / "release-the-4th-event"
    system.start("consent-2", wait=False, env={
        "CONSENTRY_FAILPOINTS": f"consent.after_seek_to_committed@{seek_window},consent.before_apply:4@{in_flight}"})
    eventually(lambda: "failpoint consent.after_seek_to_committed: holding" in system.log("consent-2"), timeout=90, interval=0.05,
               what="the successor seeking to the committed offsets")
    try:  # faust delivers the backlog now: three applied, the 4th in flight, the 5th queued
        eventually(lambda: "failpoint consent.before_apply: holding" in system.log("consent-2")
                   and partition_offset(system, "consent-2", "topic_partition_end_offset", objections, 0) >= 8,
                   timeout=10, interval=0.05, what="the successor taking the backlog during its seek")
    except AssertionError:
        pass  # a fixed worker delivers nothing before its queue is cleared
    seek_window.touch()
    system.wait_ready("consent-2")
    acknowledged[users[8]] = system.object(users[8])["objection_id"]  # @8, after the seek
    in_flight.touch()
    try:
        eventually(lambda: not missing("consent-2"), timeout=30, what="the successor applying every acknowledged event")
    except AssertionError:
        lost = missing("consent-2")
        committed = partition_offset(system, "consent-2", "topic_partition_offset_commited", objections, 0)
        raise AssertionError(f"{len(lost)} acknowledged events of the backlog never applied (objections[0] committed at "
                             f"{committed:.0f}): {[trace_user(system, u) for u in lost]}") from None


def status(system: System, instance: str, user: str) -> dict:
    """The user's consent state as one consent worker answers it (routed to the owner)."""
    response = httpx.get(f"{system.url(instance)}/v1/user/status", params={"user_id": user}, timeout=5)
    response.raise_for_status()
    return response.json()
