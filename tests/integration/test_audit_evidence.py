"""One person's evidence and the compliance report, from a real Delta audit table: the admin
endpoint over real HTTP lists every step with its proof and the runs that read the person's
posts; `consentry report` writes a page chromium renders with the figures the table holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from consentry.audit import AuditTable, row_of
from consentry.domain.audit import TABLE_KEY, ChainHead
from consentry_cli.cli import app
from tests.support.browser import Browser
from tests.support.gateway import StartGateway, start_gateway  # noqa: F401  (fixture)
from tests.support.gateway_settings import admin_token, user_token

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
S = 1_000_000
DAY = 86_400 * S
D1 = int(dt.datetime(2026, 10, 5, tzinfo=dt.UTC).timestamp()) * S  # inside the window 2026-10-05..2026-10-06


def build_table(uri: str) -> AuditTable:
    """A chain as the audit writer leaves it: alice objected on the web, enforced and purged (run-1
    had read her rows); bob imported an objection, enforced, not purged; carol before the window."""
    users = ChainHead()
    table_level = ChainHead()
    rows = []

    def add(partition: int, head: ChainHead, fact: dict) -> None:
        record, raw = head.link(fact)
        rows.append(row_of(partition, head.seq - 1, record, raw))

    add(0, table_level, {"fact": "run_read", "user_id": TABLE_KEY, "run_id": "run-1", "version": 3, "at_us": D1 - DAY})
    add(0, table_level, {"fact": "vacuumed", "user_id": TABLE_KEY, "runs": 1, "files_removed": 2, "version": 4, "at_us": D1 - DAY // 2})
    add(1, users, {"fact": "received", "user_id": "carol", "objection_id": "o-c", "kind": "object", "channel": "app", "at_us": D1 - 2 * DAY, "partition": 1, "offset": 0})
    add(1, users, {"fact": "received", "user_id": "alice", "objection_id": "o-a", "kind": "object", "channel": "web", "at_us": D1, "partition": 1, "offset": 1})
    add(1, users, {"fact": "enforced", "user_id": "alice", "objection_ids": ["o-a"], "at_us": D1 + 2 * S, "receipt_partition": 1, "receipt_offset": 0})
    add(1, users, {"fact": "purged", "user_id": "alice", "objection_ids": ["o-a"], "at_us": D1 + 7 * S, "rows_purged": 3, "version": 9,
                   "trained_on_runs": ["run-1"], "receipt_partition": 1, "receipt_offset": 1})
    add(1, users, {"fact": "received", "user_id": "bob", "objection_id": "o-b", "kind": "object", "channel": "import", "at_us": D1 + DAY, "partition": 1, "offset": 2})
    add(1, users, {"fact": "enforced", "user_id": "bob", "objection_ids": ["o-b"], "at_us": D1 + DAY + 4 * S, "receipt_partition": 1, "receipt_offset": 2})
    add(1, users, {"fact": "dropped", "user_id": "alice", "day": "2026-10-05", "reason": "objected", "count": 5, "at_us": D1 + 60 * S})
    add(0, table_level, {"fact": "run_read", "user_id": TABLE_KEY, "run_id": "run-2", "version": 10, "at_us": D1 + 2 * DAY})
    add(0, table_level, {"fact": "reconciled", "user_id": TABLE_KEY, "runs": 1, "users": 3, "rows_scanned": 40, "rows_purged": 0, "at_us": D1 + DAY})
    table = AuditTable(uri)
    table.append(rows)
    return table


@pytest.fixture
def browser() -> Iterator[Browser]:
    browser = Browser()
    try:
        yield browser
    finally:
        browser.close()


def test_an_operator_sees_a_persons_whole_chain_with_proofs_and_the_runs_that_read_their_posts(start_gateway: StartGateway, tmp_path: Path) -> None:  # noqa: F811
    uri = str(tmp_path / "audit")
    build_table(uri)
    url, _ = start_gateway(audit_uri=uri)
    assert httpx.get(f"{url}/v1/admin/audit/alice", headers={"Authorization": f"Bearer {user_token('alice')}"}).status_code == 403
    response = httpx.get(f"{url}/v1/admin/audit/alice", headers={"Authorization": f"Bearer {admin_token()}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["fact"] for s in body["steps"]] == ["received", "enforced", "purged", "dropped"]
    received, enforced, purged, _ = body["steps"]
    assert received["proof"]["partition"] == 1 and received["proof"]["offset"] == 1 and received["at_us"] == D1
    assert enforced["proof"]["receipt_offset"] == 0
    assert purged["proof"]["version"] == 9 and purged["proof"]["rows_purged"] == 3
    assert all(len(s["proof"]["audit"]["hash"]) == 64 for s in body["steps"])
    assert body["trained_on_runs"] == [{"run_id": "run-1", "version": 3, "read_at_us": D1 - DAY}]
    assert httpx.get(f"{url}/v1/admin/audit/nobody", headers={"Authorization": f"Bearer {admin_token()}"}).json()["steps"] == []


def test_the_report_shows_in_chromium_the_figures_the_audit_table_holds(broker, tmp_path: Path, browser: Browser) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "audit")
    table = build_table(uri)
    out = tmp_path / "report"
    env = {"CONSENTRY_AUDIT_URI": uri, "KAFKA_BOOTSTRAP_SERVERS": broker[0], "CONSENTRY_TOPIC_PREFIX": f"{tmp_path.name}-"}
    result = CliRunner().invoke(app, ["report", "--from", "2026-10-05", "--to", "2026-10-06", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    figures = orjson.loads((out / "report.json").read_bytes())

    # The figures, counted again from the table's columns.
    rows = table.rows(columns=["fact", "at", "record"])
    in_window = rows.filter(pc.and_(pc.equal(rows["fact"], "received"),
                                    pc.and_(pc.greater_equal(pc.cast(rows["at"], "int64"), D1), pc.less(pc.cast(rows["at"], "int64"), D1 + 2 * DAY))))
    channels = sorted(orjson.loads(r)["channel"] for r in in_window["record"].to_pylist())
    assert figures["objections_received"] == in_window.num_rows == 2
    assert sorted(c for day in figures["objections_by_day_and_channel"].values() for c, n in day.items() for _ in range(n)) == channels
    assert figures["time_to_enforced_s"]["values"] == [2.0, 4.0] and figures["time_to_purged_s"]["values"] == [7.0]
    assert [o["objection_id"] for o in figures["not_yet_purged"]] == ["o-b"]
    assert figures["reconciliation"]["rows_found_last_pass"] == 0
    assert figures["purges_not_yet_vacuumed"] == 1  # alice's purge came after the last vacuum
    # alice: named by the sink's receipt; bob: not purged yet, so run-1 (before his objection) counts (the safe side).
    assert figures["runs_with_users_who_objected_later"] == {"run-1": ["alice", "bob"]}
    assert figures["chain"]["ok"] and figures["chain"]["records"] == table.rows().num_rows

    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    browser.goto((out / "report.html").as_uri())
    shown = browser.evaluate("""() => Object.fromEntries(['received', 'not-purged', 'reconcile', 'unvacuumed', 'runs', 'chain']
        .map(id => [id, document.getElementById(id).textContent.trim()]))""")
    assert shown["received"] == "2" and shown["not-purged"] == "1" and shown["reconcile"] == "0"
    assert shown["unvacuumed"] == "1" and shown["runs"] == "1" and shown["chain"].startswith("chain intact")
    assert browser.evaluate("() => document.querySelectorAll('svg polyline').length") == 2  # both plots drawn
    browser.screenshot(OUTPUT / "compliance-report.png")


def test_the_evidence_of_a_person_whose_id_holds_a_slash_is_found_and_a_non_canonical_id_is_a_422(start_gateway: StartGateway, tmp_path: Path) -> None:  # noqa: F811
    """Canonical ids may hold slashes (contract, "Identifiers"). `/audit/{user_id}` matched one
    path segment only, so an operator asking for `team/dana` got an undocumented 404, with or
    without the slash percent-encoded; GET /v1/admin/runs/{run_id} takes any id the same way."""
    head = ChainHead()
    record, raw = head.link({"fact": "received", "user_id": "team/dana", "objection_id": "o-d", "kind": "object", "channel": "web",
                             "at_us": D1, "partition": 2, "offset": 7})
    AuditTable(str(tmp_path / "audit")).append([row_of(2, 0, record, raw)])
    url, _ = start_gateway(audit_uri=str(tmp_path / "audit"))
    headers = {"Authorization": f"Bearer {admin_token()}"}
    for path in ("team/dana", "team%2Fdana"):
        response = httpx.get(f"{url}/v1/admin/audit/{path}", headers=headers)
        assert response.status_code == 200, (path, response.status_code, response.text)
        assert response.json()["user_id"] == "team/dana" and [s["fact"] for s in response.json()["steps"]] == ["received"], path
    for path in ("dana%0A", "%20dana", "team/%0Adana"):
        response = httpx.get(f"{url}/v1/admin/audit/{path}", headers=headers)
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert "user_id" in response.json()["detail"], (path, response.text)
