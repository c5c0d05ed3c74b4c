"""The consent table survives restarts, with or without its worker's local state. On the
embedded broker this needs consentry.patches: Tansu reports a wrong end offset when the last
changelog batch held several records, and faust's recovery then fails (ConsistencyError)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def object_all(system: System, users: list[str]) -> dict[str, dict]:
    # Many objections at once: the consent worker writes its changelog in multi-record batches.
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(users, pool.map(system.object, users), strict=True))


def consent_knows(system: System, users: list[str], receipts: dict[str, dict]) -> bool:
    return all(system.status(u)["history"][0]["objection_id"] == receipts[u]["objection_id"] for u in users)


@pytest.mark.parametrize("local_state", ["kept", "lost"])
def test_consent_recovers_its_table_after_a_crash(system: System, local_state: str) -> None:
    system.create_topics()
    system.start()
    users = [f"recover-{i}" for i in range(40)]
    receipts = object_all(system, users)
    eventually(lambda: consent_knows(system, users, receipts), timeout=30, what="objections in the table")

    system.kill("consent")  # kill -9 right after a burst of table writes
    if local_state == "lost":
        shutil.rmtree(system.data_dir / "consent")  # only the changelog remains
    system.start("consent")

    eventually(lambda: consent_knows(system, users, receipts), timeout=30, what="table recovered")
    for user in users:
        system.wait_status(user, "purged")  # and the pipeline carried on from there
