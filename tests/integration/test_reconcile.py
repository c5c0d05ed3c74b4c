"""Reconciliation on the real broker and a real Delta table: rows whose purge marker never
reached the sink are found from the consent state and deleted; the figures reach the sink's
metrics; a second pass finds nothing; the sink runs passes of its own; and a pass deleting
while the sink writes loses nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

from prometheus_client import REGISTRY

from consentry.domain.consent import apply_objection, apply_receipt
from consentry.domain.model import ENFORCED, ObjectionEvent, Receipt
from consentry.partitioning import home_partition
from consentry.timeutil import format_rfc3339, now_us
from consentry.wire import encode_consent_state
from services.sink.reconcile import DELETE_CHUNK, ObjectedUsers, delete_offending, find_offending
from services.sink.store import DeltaTrainingStore
from services.sink.writer import IdempotentWriter
from consentry.domain.purge import Plan, Purge
from tests.support.kafka import produce
from tests.support.sink import RunningSink, create_sink_topics, sink_settings, stored_ids
from tests.support.wait import eventually_async

HOUR = 3_600_000_000
NOW = now_us()


def consent_record(user: str, *events: tuple[str, int]) -> bytes:
    """The consent table's row for `user` after these (kind, received_at) events, each enforced
    (its marker written: the state says `enforced`, whatever the table holds)."""
    state = None
    for n, (kind, at) in enumerate(events):
        event = ObjectionEvent(f"o-{user}-{n}", user, kind, at, "web")
        state = apply_objection(state, event, at)
        state = apply_receipt(state, Receipt(ENFORCED, user, (event.objection_id,), at + 1), at + 1)
    assert state is not None
    return encode_consent_state(state)


async def publish_consent(settings, records: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    for user, value in records.items():
        await produce(settings.bootstrap_servers, settings.topics.consent_state, [(user.encode(), value)],
                      partition=home_partition(user, settings.partitions))


def row(post_id: str, user: str, created: int, ingested: int) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(created), "text": f"words of {post_id}",
            "lang": "fr", "country": "FR", "ingested_at": format_rfc3339(ingested)}


async def leaky_table(broker: tuple[str, str], tmp_path: Path, **extra):  # type: ignore[no-untyped-def]
    """alice objected 10 hours ago and carol objected then withdrew; both are `enforced`, yet
    their purge markers never reached the table (written here directly). bob never objected."""
    settings = sink_settings(*broker, tmp_path, **extra)
    await create_sink_topics(settings)
    await publish_consent(settings, {
        "alice": consent_record("alice", ("object", NOW - 10 * HOUR)),
        "carol": consent_record("carol", ("object", NOW - 10 * HOUR), ("withdraw", NOW - 5 * HOUR)),
    })
    store = DeltaTrainingStore(settings.store_uri)
    store.append([
        row("alice-1", "alice", NOW - 50 * HOUR, NOW - 50 * HOUR),
        row("alice-2", "alice", NOW - 20 * HOUR, NOW - 20 * HOUR),
        row("alice-3", "alice", NOW - 9 * HOUR, NOW - 9 * HOUR),  # stored while she objected
        row("carol-during", "carol", NOW - 8 * HOUR, NOW - 4 * HOUR),  # created while she objected
        row("carol-after", "carol", NOW - 4 * HOUR, NOW - 3 * HOUR),  # after her withdrawal: eligible
        row("bob-1", "bob", NOW - 9 * HOUR, NOW - 9 * HOUR),
        row("bob-2", "bob", NOW - 2 * HOUR, NOW - 2 * HOUR),
    ])
    return settings


def run_reconcile(settings, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CONSENTRY_BROKER_FLAVOR": settings.broker_flavor,
        "CONSENTRY_TOPIC_PREFIX": settings.topic_prefix,
        "CONSENTRY_PARTITIONS": str(settings.partitions),
        "TRAINING_STORE_URI": settings.store_uri,
    }
    done = subprocess.run([sys.executable, "-m", "consentry_cli", "reconcile", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_consentry_reconcile_deletes_what_lost_markers_left_and_counts_it(broker: tuple[str, str], tmp_path: Path) -> None:
    settings = await leaky_table(broker, tmp_path)

    dry = await asyncio.to_thread(run_reconcile, settings, "--dry-run")
    assert "4 rows of 2 users to delete (dry run)" in dry.stderr
    assert len(stored_ids(settings)) == 7  # a dry run deletes nothing

    first = await asyncio.to_thread(run_reconcile, settings)
    assert "4 rows of 2 users deleted" in first.stderr and "a leak was caught" in first.stderr
    assert stored_ids(settings) == {"carol-after", "bob-1", "bob-2"}

    second = await asyncio.to_thread(run_reconcile, settings)
    assert "0 rows of 0 users deleted" in second.stderr
    assert stored_ids(settings) == {"carol-after", "bob-1", "bob-2"}

    record = DeltaTrainingStore(settings.store_uri).reconcile_record()
    assert record is not None and (record.runs, record.rows_purged_total, record.last_rows_purged, record.last_users) == (2, 4, 0, 2)
    # The sink shows the table's record (the command is one-shot: nothing to scrape).
    async with RunningSink(settings):
        assert sample("consentry_reconcile_runs_total") == 2
        assert sample("consentry_reconcile_rows_purged_total") == 4
        assert sample("consentry_reconcile_last_rows_purged") == 0
        assert sample("consentry_reconcile_last_run_timestamp_seconds") == record.last_ended_at_us / 1e6


async def test_the_sink_runs_passes_of_its_own(broker: tuple[str, str], tmp_path: Path) -> None:
    settings = await leaky_table(broker, tmp_path, reconcile_interval_s=0.5)

    async with RunningSink(settings):
        async def purged() -> bool:
            return stored_ids(settings) == {"carol-after", "bob-1", "bob-2"}

        await eventually_async(purged, timeout=60, what="the sink's pass deleted the leaked rows")

        async def recorded() -> bool:
            return (sample("consentry_reconcile_runs_total") or 0) >= 2 and sample("consentry_reconcile_rows_purged_total") == 4

        await eventually_async(recorded, timeout=60, what="the sink's passes in its metrics")


def test_a_pass_deleting_while_the_sink_writes_loses_nothing(tmp_path: Path) -> None:
    """The sink (its writer: appends, purges, positions) and a pass (deletes of leaked rows, a
    few posts per commit) commit to one table at the same time, from two threads. Every
    overtaken commit is done again: every eligible post is stored once, every leaked row and
    every purged user is gone, the positions are the sink's last."""
    uri = str(tmp_path / "training")
    leakers = [f"leaker-{n}" for n in range(30)]
    DeltaTrainingStore(uri).append([row(f"{u}-{i}", u, NOW - 9 * HOUR, NOW - 9 * HOUR) for u in leakers for i in range(3)])
    objected = ObjectedUsers.of(NOW, {u: (((NOW - 10 * HOUR, None),), NOW - 5 * 60_000_000) for u in leakers})
    errors: list[BaseException] = []

    def sink() -> None:
        try:
            writer = IdempotentWriter(DeltaTrainingStore(uri))
            for batch in range(30):
                appends = [row(f"bob-{batch}-{i}", f"bob-{i}", NOW - HOUR, NOW - HOUR) for i in range(5)]
                appends += [row(f"dora-{batch}", "dora", NOW - HOUR, NOW - HOUR)]
                purges = {"dora": Purge("dora", ("o",), NOW)} if batch % 10 == 9 else {}
                writer.apply(Plan(purges=purges, appends=[] if purges else appends), {"consentry-sink:training.posts:0": batch + 1})
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)

    def reconcile() -> None:
        try:
            store = DeltaTrainingStore(uri)
            hits, _ = find_offending(store, objected)
            hits = hits.sort_by("post_id")
            assert hits.num_rows == 90 and DELETE_CHUNK > 3
            for start in range(0, hits.num_rows, 3):  # one leaker per commit: many chances to collide
                delete_offending(store, hits.slice(start, 3))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    before = sum(REGISTRY.get_sample_value("consentry_sink_commit_conflicts_total", {"operation": op}) or 0
                 for op in ("append", "purge", "positions", "reconcile"))
    threads = [threading.Thread(target=sink), threading.Thread(target=reconcile)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    table = DeltaTrainingStore(uri)
    stored = sorted(table.read(["post_id"]).column("post_id").to_pylist())
    batches_with_appends = [b for b in range(30) if b % 10 != 9]
    assert stored == sorted(f"bob-{b}-{i}" for b in batches_with_appends for i in range(5))  # dora purged at 9, 19, 29
    assert table.applied_position("consentry-sink:training.posts:0") == 30
    conflicts = sum(REGISTRY.get_sample_value("consentry_sink_commit_conflicts_total", {"operation": op}) or 0
                    for op in ("append", "purge", "positions", "reconcile")) - before
    print(f"commits overtaken and done again: {conflicts:.0f}")
