"""The gateway's /metrics as Prometheus sees it, from the real process: the sum over its worker
processes whichever worker answers, its build, and every consumer group's lag read from outside
the groups (so a group with no live member shows its lag)."""

from __future__ import annotations

from pathlib import Path

from consentry.scrape import scrape, total
from tests.support.system import System
from tests.support.wait import eventually

OBJECTIONS = 12


def test_two_workers_report_the_same_sums_and_a_dead_groups_lag_shows(system: System, tmp_path: Path) -> None:
    system.create_topics()
    # The gateway only: no consent worker, so the consent group has no live member at all.
    system.start("gateway", env={"GATEWAY_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")})
    for n in range(OBJECTIONS):
        # A new connection each: the kernel spreads them over both workers. Each worker's publisher
        # connects on its own after start (readiness saw one of them): until then it answers 503,
        # and a client retries.
        eventually(lambda n=n: system.object(f"user-{n}"), timeout=60, what=f"objection {n} accepted")

    url = f"{system.gateway_url}/metrics"
    scrapes = [scrape(url, timeout=10) for _ in range(10)]

    counted = [total(m, "consentry_gateway_objections_total") for m in scrapes]
    assert counted == [OBJECTIONS] * len(scrapes), f"each scrape must count every worker's objections: {counted}"
    latest = scrapes[-1]
    assert total(latest, "consentry_build_info") == 1
    [(labels, _)] = latest["consentry_build_info"].items()
    assert dict(labels)["version"] and dict(labels)["python"]
    assert total(latest, "consentry_group_lag_up") == 1
    consent_group = system.topics.group("consent")
    assert total(latest, "consentry_group_lag", group=consent_group, topic=system.topics.objections) == OBJECTIONS
    assert total(latest, "consentry_group_lag", group=system.topics.group("sink")) == 0  # nothing to read yet
