"""A consent worker that leaves cleanly (SIGTERM) while objections keep arriving hands its
partitions over without losing any: every acknowledged event is applied by the next owner.

Seen in the scale-out races (docs/reliability.md): a withdrawal acknowledged while the only
consent worker owning its partition was stopping was in no changelog record, the event after
it was applied by the next owner."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

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


@pytest.mark.quick
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
        raise AssertionError(f"{sum(map(len, lost.values()))} acknowledged events never applied: {lost}") from None
    ledger.record("nothing lost", **{"consent hand-overs under load": 1, "events across them": sum(map(len, acknowledged.values()))})
