"""An operator opens the dashboard while the pipeline runs: live numbers, a purge counted,
every service healthy, and not one word of anybody's post on the page."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from consentry.scrape import total
from consentry.timeutil import format_rfc3339, now_us
from tests.support.browser import Browser
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture
def browser() -> Iterator[Browser]:
    browser = Browser()
    try:
        yield browser
    finally:
        browser.close()


def post(post_id: str, user: str, secret: str, visibility: str = "public", minor: bool = False) -> dict:
    return {
        "post_id": post_id,
        "user_id": user,
        "created_at": format_rfc3339(now_us()),
        "visibility": visibility,
        "text": f"{secret} diary of {user}, entry {post_id}",
        "lang": "en",
        "country": "FR",
        "author_is_minor": minor,
    }


READ_PAGE = """() => {
  const text = (id) => document.getElementById(id).textContent.trim();
  const health = {};
  for (const li of document.querySelectorAll('#health [data-service]')) health[li.dataset.service] = li.dataset.state || '';
  return {
    accepted: text('total-accepted'),
    purges: text('total-purges'),
    rowsPurged: text('total-rows_purged'),
    overall: text('overall-text'),
    backlog: text('backlog-age'),
    waitingForNotice: text('notices-waiting_posts'),
    leaked: text('proof-reconcile-rows'),
    snapshots: text('proof-lineage-snapshots'),
    health,
    rejects: [...document.querySelectorAll('#rejects .code')].map((el) => el.textContent),
  };
}"""


def number(text: str) -> int:
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else -1


def test_the_dashboard_shows_the_promise_kept_live(system: System, browser: Browser) -> None:
    system.create_topics()
    system.start()
    run = uuid.uuid4().hex[:8]
    secret = f"SECRET-{run}"
    alice, bob, carol, dave = (f"{name}-{run}" for name in ("alice", "bob", "carol", "dave"))

    # Posts flow: some are stored, some kept out, one is not even JSON.
    system.publish_posts(
        [post(f"{alice}-1", alice, secret), post(f"{bob}-1", bob, secret), post(f"{bob}-2", bob, secret),
         post(f"{carol}-1", carol, secret, visibility="friends"), post(f"{dave}-1", dave, secret, minor=True)]
    )
    system.publish([(b"erin", f'{{"post_id": "e-1", "text": "{secret} broken'.encode())])
    eventually(lambda: len(system.training_rows()) == 3, timeout=30, what="first posts stored")

    # Bob objects; the page is opened while his purge runs.
    system.object(bob)
    # As `consentry up` prints it: an operator's token in the fragment, kept by the page in the tab.
    browser.goto(f"{system.gateway_url}/dashboard#token={system.token('operator', admin=True)}")
    system.wait_status(bob, "purged", timeout=30)

    eventually(lambda: browser.evaluate(READ_PAGE)["accepted"] == "3", timeout=20, what="the page showing the first posts")

    # More posts arrive while the operator watches: the page follows on its own, no reload.
    system.publish_posts([post(f"{alice}-{i}", alice, secret) for i in range(2, 12)] + [post(f"{bob}-3", bob, secret)])

    def live() -> dict:
        shown = browser.evaluate(READ_PAGE)
        assert number(shown["accepted"]) == 13, shown  # 3 + 10 of alice's: 13 accepted in all
        assert number(shown["purges"]) >= 1 and number(shown["rowsPurged"]) == 2, shown
        assert shown["health"] == {"gateway": "ready", "consent": "ready", "ingest": "ready", "sink": "ready"}, shown
        assert shown["overall"] == "All good", shown
        assert shown["backlog"] == "none", shown  # bob's objection is purged: nothing waits
        assert shown["waitingForNotice"] == "0", shown  # the notice rule is off in this story
        assert "invalid_json" in shown["rejects"], shown
        # The proof section: no training run opened a snapshot; a reconciliation pass, if one
        # ran yet, deleted nothing (no leak in this story).
        assert shown["snapshots"] == "0" and shown["leaked"] in ("—", "0 last pass, 0 in all"), shown
        return shown

    eventually(live, timeout=30, interval=0.5, what="the dashboard showing the live pipeline")
    browser.wait_for("() => document.querySelectorAll('#spark-posts_in polyline').length > 0")  # a rate history drawn
    browser.screenshot(OUTPUT / "dashboard.png")

    # No post text, and no user id, anywhere: not in the page, not in the data it polls.
    assert "#token" not in browser.evaluate("() => window.location.href")  # wiped from the address bar
    assert httpx.get(f"{system.gateway_url}/dashboard/data", timeout=10).status_code == 401  # operators only
    operator = {"Authorization": f"Bearer {system.token('operator', admin=True)}"}
    data = httpx.get(f"{system.gateway_url}/dashboard/data", headers=operator, timeout=10).text
    for where, content in (("page", browser.html()), ("visible text", browser.text()), ("/dashboard/data", data)):
        assert secret not in content, f"post text on the dashboard ({where})"
        for user in (alice, bob, carol, dave):
            assert user not in content, f"user id {user} on the dashboard ({where})"
    assert orjson.loads(data)["totals"]["dropped_by_reason"] == {"objected": 1, "not_public": 1, "minor": 1}


def test_every_service_exports_the_promise_metrics(system: System) -> None:
    system.create_topics()
    system.start()
    system.publish_posts([post("p-1", "zoe", "t"), post("p-2", "zoe", "t"), post("p-3", "yan", "t")])
    eventually(lambda: len(system.training_rows()) == 3, timeout=30, what="posts stored")
    system.object("zoe")
    system.wait_status("zoe", "purged", timeout=30)

    def exported() -> bool:
        consent, ingest, sink = system.metrics("consent"), system.metrics("ingest"), system.metrics("sink")
        assert total(consent, "consentry_consent_users") == 1  # zoe; yan never objected
        assert total(consent, "consentry_purge_backlog_objections") == 0
        assert total(consent, "consentry_purge_backlog_age_seconds") == 0
        assert "consentry_faust_messages_received_total" in consent  # faust's own sensors, same page
        for service, metrics in (("consent", consent), ("ingest", ingest), ("sink", sink)):
            assert total(metrics, "consentry_consumer_lag", service=service) == 0, service
            assert metrics.get("consentry_consumer_lag"), f"{service} reports no lag series"
        assert total(sink, "consentry_sink_table_bytes") > 0  # yan's post
        assert "consentry_vacuum_runs_total" in sink
        return True

    eventually(exported, timeout=20, interval=0.5, what="the metrics exported")

    # A restarted consent worker counts its users again from the recovered table.
    system.kill("consent", signal.SIGTERM)
    system.start("consent")
    consent = system.metrics("consent")
    assert total(consent, "consentry_consent_users") == 1
    assert total(consent, "consentry_purge_backlog_objections") == 0
