"""The races again, with the sink reconciling every second, a purge counted as lost 20 s after
its marker (production: an hour) and a margin of 1 s (production: 5 minutes; one host, one
clock). A pass that deletes anything in a correct system is a false alarm or a real leak:
neither may happen, and the oracle still finds every eligible post stored (nothing lost)."""

from __future__ import annotations

import pytest

from services.sink.store import DeltaTrainingStore
from tests.reliability.test_races import run_races
from tests.support import ledger
from tests.support.system import System

RECONCILING = {"CONSENTRY_RECONCILE_INTERVAL_S": "1", "CONSENTRY_RECONCILE_GRACE_S": "20", "CONSENTRY_RECONCILE_MARGIN_S": "1"}


def races_while_reconciling(system: System, seed: int, users: int) -> None:
    system.env.update(RECONCILING)
    run_races(system, seed=seed, users=users, posts_partitions=4)
    record = DeltaTrainingStore(str(system.data_dir / "training")).reconcile_record()
    assert record is not None and record.runs >= 1, "no reconciliation pass ran"
    assert record.rows_purged_total == 0, f"reconciliation deleted {record.rows_purged_total} rows in a system without leaks"
    ledger.record("no leak", **{"reconciliation passes": record.runs, "rows reconciliation deleted": record.rows_purged_total})


@pytest.mark.reliability  # in make test-reliability only (make test's 15 minutes); tests/integration/test_reconcile.py stays in make test
def test_races_quick_while_reconciling(system: System) -> None:
    races_while_reconciling(system, seed=3, users=60)


@pytest.mark.reliability
@pytest.mark.timeout(1200)
def test_races_full_while_reconciling(system: System) -> None:
    races_while_reconciling(system, seed=505, users=600)
