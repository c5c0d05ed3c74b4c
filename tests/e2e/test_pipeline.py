"""The whole pipeline, as a platform would see it: posts flow in, people object through
the gateway, and the training store keeps only what the contract allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consentry.partitioning import home_partition
from consentry.scrape import total
from consentry.timeutil import format_rfc3339, now_us, parse_rfc3339
from tests.support.system import System
from tests.support.traces import assert_one_connected_trace, tracing_env
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def post(post_id: str, user: str, *, created_us: int | None = None, visibility: str = "public", minor: bool = False) -> dict:
    return {
        "post_id": post_id,
        "user_id": user,
        "created_at": format_rfc3339(created_us if created_us is not None else now_us()),
        "visibility": visibility,
        "text": f"text of {post_id}",
        "lang": "fr",
        "country": "FR",
        "author_is_minor": minor,
    }


def consentry_status(system: System, user: str) -> str:
    done = subprocess.run([sys.executable, "-m", "consentry_cli", "status", user, "--rows"], env=system.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stored_ids(system: System) -> list[str]:
    return sorted(row["post_id"] for row in system.training_rows())


def test_objection_purges_stored_posts_and_keeps_later_ones_out(system: System, tmp_path: Path) -> None:
    system.create_topics()
    system.start(env=tracing_env(tmp_path / "spans.jsonl"))  # also followed in a trace and JSON logs (below)

    # Before anyone objects: public posts of adults are stored; the rest never is.
    before_objection = now_us()
    system.publish_posts(
        [
            post("alice-1", "alice"),
            post("alice-2", "alice"),
            post("bob-1", "bob"),
            post("bob-2", "bob"),
            post("carol-friends", "carol", visibility="friends"),
            post("carol-private", "carol", visibility="private"),
            post("dave-minor", "dave", minor=True),
            post("alice-1", "alice"),  # re-delivered by the producer: stored once
        ]
    )
    system.publish(
        [
            (b"erin", b"this is not json"),
            (b"erin", b'{"post_id": "e-1", "user_id": "erin"}'),
            (b"mallory", b'{"post_id": "m-1", "user_id": "erin", "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": "x"}'),
        ]
    )
    eventually(lambda: stored_ids(system) == ["alice-1", "alice-2", "bob-1", "bob-2"], timeout=60, what="first posts stored")

    # Bob objects through the API; his stored posts are purged.
    receipt = system.object("bob", reason="no thanks", channel="web")
    assert receipt["user_id"] == "bob" and receipt["status"] == "received"
    purged = system.wait_status("bob", "purged")
    assert purged["objected"] is True
    [entry] = purged["history"]
    assert entry["objection_id"] == receipt["objection_id"]
    assert entry["channel"] == "web"
    assert parse_rfc3339(entry["received_at"]) <= parse_rfc3339(entry["enforced_at"]) <= parse_rfc3339(entry["purged_at"])
    assert entry["rows_purged"] == 2
    assert stored_ids(system) == ["alice-1", "alice-2"]
    # An operator can follow it: one connected trace across the processes, JSON lines with its ids.
    assert_one_connected_trace(system, tmp_path / "spans.jsonl", receipt["objection_id"], "bob")

    # The same two people as an operator sees them: `consentry status` (the runbook's first step).
    bob = consentry_status(system, "bob")
    assert bob.startswith("user bob: purged (objected)\n"), bob
    assert f"home partition: {home_partition('bob', system.partitions)} of {system.partitions}" in bob
    assert f"object   {receipt['objection_id']}  (web)" in bob and "purged_at" in bob and "rows_purged 2" in bob
    assert bob.rstrip().endswith("): 0")  # rows left in the training store
    alice = consentry_status(system, "alice")
    assert alice.startswith("user alice: none\n") and alice.rstrip().endswith("): 2"), alice

    # After the objection: bob's new posts, and his old ones arriving late, stay out.
    system.publish_posts([post("bob-3", "bob"), post("bob-old", "bob", created_us=before_objection - 10_000_000), post("alice-3", "alice")])
    eventually(lambda: "alice-3" in stored_ids(system), timeout=30, what="alice-3 stored")
    eventually(lambda: total(system.metrics("ingest"), "consentry_ingest_dropped_total", reason="objected") >= 2, what="bob's posts dropped")

    rows = system.training_rows()
    assert sorted(r["post_id"] for r in rows) == ["alice-1", "alice-2", "alice-3"]
    assert {r["user_id"] for r in rows} == {"alice"}
    assert all(r["text"] == f"text of {r['post_id']}" and r["lang"] == "fr" and r["country"] == "FR" for r in rows)

    reasons = sorted(r["reason_code"] for r in system.rejected())
    assert reasons == ["invalid_json", "key_mismatch", "missing_field"]
    assert {r["topic"] for r in system.rejected()} == {system.topics.posts}


def test_withdrawal_makes_later_posts_eligible_again(system: System) -> None:
    system.create_topics()
    system.start()
    system.object("frank")
    system.wait_status("frank", "purged")  # nothing stored yet: an empty purge still completes
    during = now_us()
    system.publish_posts([post("frank-during", "frank", created_us=during)])
    eventually(lambda: total(system.metrics("ingest"), "consentry_ingest_dropped_total", reason="objected") >= 1, what="dropped")

    withdrawal = system.withdraw("frank")
    system.wait_status("frank", "withdrawn")
    assert system.status("frank")["objected"] is False
    # The withdrawal takes effect once ingest has applied it (its `enforced_at`).
    eventually(lambda: _withdrawal_applied(system, withdrawal["objection_id"]), timeout=30, what="withdrawal applied by ingest")
    system.publish_posts([post("frank-after", "frank"), post("frank-during-again", "frank", created_us=during)])
    eventually(lambda: stored_ids(system) == ["frank-after"], timeout=30, what="post after withdrawal stored")


def _withdrawal_applied(system: System, withdrawal_id: str) -> bool:
    [entry] = [e for e in system.status("frank")["history"] if e["objection_id"] == withdrawal_id]
    return entry["kind"] == "withdraw" and entry["enforced_at"] is not None
