"""Notices first: no post is used before its author was told and had time to object.

The whole system on the embedded broker, with the notice rule on and a grace period of a
few seconds. Waiting for the grace period to end is a wait on the clock: the test polls for
its outcome with deadlines well above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from consentry.partitioning import home_partition
from consentry.scrape import total
from consentry.timeutil import format_rfc3339, now_us
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

GRACE_S = 15
DAY_US = 86_400_000_000


def post(post_id: str, user: str, country: str | None) -> dict[str, Any]:
    return {
        "post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public",
        "text": f"text of {post_id}", "lang": "fr", "country": country, "author_is_minor": False,
    }


def notice(notice_id: str, user: str, sent_at_us: int, country: str = "FR", channel: str = "email") -> dict[str, Any]:
    return {"notice_id": notice_id, "user_id": user, "notice_version": "2025-05", "channel": channel, "sent_at": format_rfc3339(sent_at_us), "country": country}


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    bootstrap, flavor = broker
    with System(bootstrap, flavor, tmp_path, notices=True, extra_env={"CONSENTRY_NOTICE_GRACE": f"{GRACE_S}s"}) as sut:
        yield sut


def stored(system: System) -> dict[str, dict[str, Any]]:
    return {row["post_id"]: row for row in system.training_rows()}


def ingested_us(row: dict[str, Any]) -> int:
    return int(row["ingested_at"].timestamp() * 1_000_000)


def ingest(system: System, name: str) -> float:
    return total(system.metrics("ingest"), name)


def test_posts_wait_for_the_notice_grace_period_and_survive_a_crash(system: System) -> None:
    system.create_topics()
    system.start()

    # The platform tells nora and oscar now, and told pia long ago (her notice lands off her
    # home partition: the consent service moves it home). uma is American, zoe unknown.
    told_at = now_us()
    pia_partition = (home_partition("pia", system.partitions) + 1) % system.partitions
    system.publish_notices([notice("n-nora", "nora", told_at), notice("n-oscar", "oscar", told_at, channel="in_app")])
    system.publish([(b"pia", orjson.dumps(notice("n-pia", "pia", told_at - 40 * DAY_US)))], topic=system.topics.notices, partition=pia_partition)
    system.publish_posts(
        [
            post("nora-1", "nora", "FR"), post("nora-2", "nora", "FR"),
            post("oscar-1", "oscar", "FR"), post("oscar-2", "oscar", "FR"),
            post("uma-1", "uma", "US"), post("uma-2", "uma", "US"),
            post("pia-1", "pia", "FR"),
            post("zoe-1", "zoe", None),
        ]
    )

    # Outside the jurisdictions, or told long ago: flows at once. The rest is held.
    eventually(lambda: {"uma-1", "uma-2", "pia-1"} <= set(stored(system)), timeout=60, what="uma's and pia's posts stored")
    eventually(lambda: ingest(system, "consentry_ingest_deferred_posts") == 5, timeout=30, what="nora's, oscar's and zoe's posts deferred")
    assert set(stored(system)) == {"uma-1", "uma-2", "pia-1"}
    assert all(ingested_us(row) < told_at + GRACE_S * 1_000_000 for row in stored(system).values())
    assert ingest(system, "consentry_ingest_users_waiting_for_notice") == 3
    assert ingest(system, "consentry_ingest_dropped_total") == 0  # deferred is not dropped

    # People see the notices they were sent.
    [shown] = system.status("nora")["notices"]
    assert (shown["notice_id"], shown["notice_version"], shown["channel"], shown["country"]) == ("n-nora", "2025-05", "email", "FR")
    assert [n["notice_id"] for n in system.status("pia")["notices"]] == ["n-pia"]

    # oscar objects during his grace period: his deferred posts are dropped, never stored, and
    # his objection records the notice he had been sent.
    system.object("oscar")
    eventually(lambda: ingest(system, "consentry_ingest_deferred_dropped_total") == 2, timeout=30, what="oscar's posts dropped")
    assert system.wait_status("oscar", "purged")["history"][0]["notice_version"] == "2025-05"

    # Ingest crashes while nora's and zoe's posts wait; another of nora's arrives meanwhile.
    assert now_us() < told_at + GRACE_S * 1_000_000, "the grace period ended before the crash: raise GRACE_S"
    system.kill("ingest")
    system.publish_posts([post("nora-3", "nora", "FR")])
    system.start("ingest")

    # After the grace period, nora's posts are released into Delta, none before its end.
    release = told_at + GRACE_S * 1_000_000
    eventually(lambda: {"nora-1", "nora-2", "nora-3"} <= set(stored(system)), timeout=GRACE_S + 60, what="nora's posts released")
    rows = stored(system)
    assert all(ingested_us(rows[p]) >= release for p in ("nora-1", "nora-2", "nora-3"))
    assert rows["nora-1"]["text"] == "text of nora-1" and rows["nora-1"]["country"] == "FR"

    # Nothing lost, nothing leaked: oscar's posts never stored, zoe's still held by the new
    # ingest (no notice and no country: fail closed).
    eventually(lambda: ingest(system, "consentry_ingest_deferred_posts") == 1, timeout=30, what="only zoe's post still deferred")
    assert set(stored(system)) == {"uma-1", "uma-2", "pia-1", "nora-1", "nora-2", "nora-3"}
    assert ingest(system, "consentry_ingest_users_waiting_for_notice") == 1
    assert len(system.training_rows()) == 6  # each post once


def test_deferred_posts_over_their_bound_wait_unindexed_and_are_all_released_when_due(broker: tuple[str, str], tmp_path: Path) -> None:
    bootstrap, flavor = broker
    grace_s = 8
    # Three deferred posts fill the index: nora's last two wait unindexed in the topic.
    env = {"CONSENTRY_NOTICE_GRACE": f"{grace_s}s", "CONSENTRY_DEFERRED_MAX_POSTS": "3"}
    with System(bootstrap, flavor, tmp_path, notices=True, extra_env=env) as system:
        system.create_topics()
        system.start()
        told_at = now_us()
        system.publish_notices([notice("n-nora", "nora", told_at)])
        system.publish_posts([post(f"nora-{n}", "nora", "FR") for n in range(5)])
        eventually(lambda: ingest(system, "consentry_ingest_deferred_full") == 1, timeout=30, what="deferred posts at their bound")
        assert ingest(system, "consentry_ingest_deferred_posts") == 3

        # Ingest reads on: a post that needs no notice is stored while the bound is full...
        system.publish_posts([post("uma-1", "uma", "US")])
        eventually(lambda: "uma-1" in stored(system), timeout=60, what="uma's post stored while the bound is full")
        # ...and once nora's grace period ends, all five are released (the two left out are read
        # again from the topic once the first three free room), none before its end, none dropped.
        eventually(lambda: {f"nora-{n}" for n in range(5)} <= set(stored(system)), timeout=grace_s + 60, what="all of nora's posts stored")
        release = told_at + grace_s * 1_000_000
        assert all(ingested_us(stored(system)[f"nora-{n}"]) >= release for n in range(5))
        eventually(lambda: ingest(system, "consentry_ingest_deferred_full") == 0, timeout=30, what="the bound free again")
        assert ingest(system, "consentry_ingest_deferred_dropped_total") == 0
        assert len(system.training_rows()) == 6  # each post once


def test_users_never_notified_filling_the_deferred_bound_stop_no_one_else(broker: tuple[str, str], tmp_path: Path) -> None:
    bootstrap, flavor = broker
    # An index three deferred posts fill (before: a memory bound of about three post bodies,
    # CONSENTRY_DEFERRED_MAX_BYTES=1500, that stopped ingest).
    env = {"CONSENTRY_NOTICE_GRACE": "8s", "CONSENTRY_DEFERRED_MAX_POSTS": "3"}
    with System(bootstrap, flavor, tmp_path, notices=True, extra_env=env) as system:
        system.create_topics()
        system.start()
        # People in France the platform never told: their posts wait, and fill the bound.
        never = [f"zoe-{n}" for n in range(6)]
        system.publish_posts([post(f"{user}-1", user, "FR") for user in never])
        eventually(lambda: ingest(system, "consentry_ingest_deferred_total") == 6, timeout=30, what="the untold users' posts deferred")
        eventually(lambda: ingest(system, "consentry_ingest_deferred_full") == 1, timeout=30, what="deferred posts at their bound")

        # uma (in the US) needs no notice: her posts are stored at once, the bound full or not.
        system.publish_posts([post("uma-1", "uma", "US"), post("uma-2", "uma", "US")])
        eventually(lambda: {"uma-1", "uma-2"} <= set(stored(system)), timeout=60, what="uma's posts stored while the bound is full")
        assert not any(p.startswith("zoe") for p in stored(system))

        # Told 40 days ago after all (an import): every one of their posts is released, those
        # beyond the bound too; none is lost, none dropped.
        told = now_us() - 40 * DAY_US
        system.publish_notices([notice(f"n-{user}", user, told) for user in never])
        eventually(lambda: {f"{user}-1" for user in never} <= set(stored(system)), timeout=90, what="every untold user's post released once told")
        assert len(system.training_rows()) == 8  # each post once
        assert ingest(system, "consentry_ingest_deferred_dropped_total") == 0
        eventually(lambda: ingest(system, "consentry_ingest_deferred_full") == 0, timeout=30, what="the bound free again")
