"""Zombies: a worker frozen past its session timeout, woken after its group moved on.

A failpoint (`NAME:1:stop`) freezes the worker with SIGSTOP at the worst step, holding what
it decided; a second worker takes its partitions over and does newer work on the same user;
then the test wakes the first one (SIGCONT). Without fencing it wrote what it held after the
new owner's records: a consent row without the withdrawal the new owner had applied (the
compacted changelog keeps the last row: the withdrawal erased for every reader), a post after
its user's purge marker (stored again: a leak). With fencing (consentry/fencing.py) it ends
(exit 70) before writing anything, and its restart would read again from the committed
offsets. docs/reliability.md, "Zombies"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from consentry.fencing import EXIT_CODE
from consentry.timeutil import format_rfc3339, now_us
from tests.support import ledger
from tests.support.system import System
from tests.support.wait import eventually


def frozen(system: System, instance: str) -> bool:
    """The process is stopped (state T in /proc), not merely slow."""
    pid = system.processes[instance].pid
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "T"


def consent_events(system: System, instance: str, user: str) -> set[str]:
    """The objection ids `instance` (a running consent worker) holds for the user."""
    response = httpx.get(f"{system.url(instance)}/v1/user/status", params={"user_id": user}, timeout=5)
    if response.status_code != 200:
        return set()
    return {item["objection_id"] for item in response.json()["history"]}


def latest_row(system: System, user: str) -> set[str] | None:
    """The objection ids of the user's latest consent changelog record: what compaction keeps,
    what ingest, the gateway and a rebuilt table read."""
    rows = [r for r in system.read(system.topics.consent_state) if r.key == user.encode()]
    if not rows:
        return None
    value = orjson.loads(rows[-1].value)
    return {item["objection_id"] for item in value["history"]}


def wake_and_wait(system: System, instance: str, harm: Any, what: str) -> int:
    """SIGCONT, then wait until the worker either does harm (a failure, named) or ends."""
    system.resume(instance)
    process = system.processes[instance]

    def settled() -> tuple[str, Any] | None:
        damage = harm()
        if damage:
            return "harm", damage
        return ("ended", process.returncode) if process.poll() is not None else None

    outcome, detail = eventually(settled, timeout=60, interval=0.1, what=f"{instance} fenced or doing harm")
    assert outcome == "ended", f"{instance}, woken after its group moved on, {what}: {detail}\n{system.log(instance)[-3000:]}"
    return system.wait_exit(instance)


@pytest.mark.quick
def test_a_consent_worker_woken_from_a_stall_does_not_erase_a_newer_event(system: System) -> None:
    system.create_topics()
    system.start("gateway")
    # Frozen right after its first table write: the row is in its RocksDB, the changelog record
    # still in faust's producer buffer (it would leave at the next flush).
    system.start("consent", env={"CONSENTRY_FAILPOINTS": "consent.after_table_write:1:stop"})
    user = "zombie-consent-user"
    objected = system.object(user)["objection_id"]
    eventually(lambda: frozen(system, "consent"), timeout=30, what="consent frozen at its table write")

    # A new worker takes every partition once the frozen one's session (3 s) expired, applies
    # the objection again (its offset was never committed), then the user withdraws.
    system.start("consent-2")
    eventually(lambda: objected in consent_events(system, "consent-2", user), timeout=60, what="the new owner applied the objection")
    withdrawn = system.withdraw(user)["objection_id"]
    eventually(lambda: (latest_row(system, user) or set()) >= {objected, withdrawn}, timeout=60,
               what="the new owner's row with the withdrawal in the changelog")

    def erased() -> str | None:
        row = latest_row(system, user)
        return None if row is not None and withdrawn in row else f"the latest changelog row of {user} lacks the withdrawal: {row}"

    assert wake_and_wait(system, "consent", erased, "wrote a stale row") == EXIT_CODE
    assert "fenced:" in system.log("consent")
    assert withdrawn in consent_events(system, "consent-2", user)
    ledger.record("nothing lost", **{"zombie consent workers fenced": 1})


def post(post_id: str, user: str) -> dict[str, Any]:
    # From outside the notice jurisdictions: no notice needed before it is decided.
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public",
            "text": f"text of {post_id}", "lang": "en", "country": "US", "author_is_minor": False}


@pytest.mark.quick
def test_an_ingest_worker_woken_from_a_stall_does_not_forward_a_post_after_its_purge_marker(system: System) -> None:
    system.create_topics()
    system.start("consent", "gateway", "sink")
    # Frozen right after deciding its first batch: the post found eligible, not yet sent.
    system.start("ingest", env={"CONSENTRY_FAILPOINTS": "ingest.after_decide:1:stop"})
    user = "zombie-ingest-user"
    system.publish_posts([post("zombie-post-1", user)])
    eventually(lambda: frozen(system, "ingest"), timeout=60, what="ingest frozen after deciding the post")

    # The new owner decides the post again (its offset was never committed) and forwards it;
    # then the user objects and the new owner's purge marker removes it.
    system.start("ingest-2")
    eventually(lambda: any(r["post_id"] == "zombie-post-1" for r in system.training_rows()), timeout=60, what="the post stored")
    objection = system.object(user)["objection_id"]
    eventually(lambda: any(item["objection_id"] == objection and item.get("purged_at") for item in system.consent_status(user)["history"]),
               timeout=60, what="the objection purged")

    def leaked() -> list[str]:
        return [r["post_id"] for r in system.training_rows() if r["user_id"] == user]

    assert wake_and_wait(system, "ingest", leaked, "forwarded a post after its user's purge marker") == EXIT_CODE
    assert "fenced:" in system.log("ingest")
    # Everything the frozen worker could have sent is on the topic or never will be: a post of
    # another user, stored, shows the sink has read past that point.
    system.publish_posts([post("after-the-zombie", "another-user")])
    eventually(lambda: any(r["post_id"] == "after-the-zombie" for r in system.training_rows()), timeout=60, what="a later post stored")
    assert not leaked()
    ledger.record("no leak", **{"zombie ingest workers fenced": 1})
