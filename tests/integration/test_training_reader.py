"""The reader API (consentry.training) on the embedded broker and a real Delta table: no lineage
record, no snapshot; and a delete committed while a snapshot is being recorded makes it pin the
new version (the sink, reading lineage after its delete, could have missed the first record)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest

from consentry import training
from consentry.kafka import ensure_topics
from consentry.settings import CommonSettings
from consentry.timeutil import parse_rfc3339
from consentry.training import LineageNotRecorded, open_snapshot
from services.sink.store import DeltaTrainingStore, MemoryTrainingStore
from tests.support.kafka import read_all
from tests.support.ports import free_port


def row(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": "t", "ingested_at": "2025-05-27T10:00:01Z"}


def a_table(root: Path) -> DeltaTrainingStore:
    store = DeltaTrainingStore(str(root / "training"))
    store.append([row("alice-1", "alice"), row("bob-1", "bob")])
    return store


def lineage_settings(broker: tuple[str, str]) -> CommonSettings:
    settings = CommonSettings(kafka_bootstrap_servers=broker[0], broker_flavor=broker[1], topic_prefix=f"t{uuid.uuid4().hex[:10]}-")
    asyncio.run(ensure_topics(settings, [s for s in settings.topics.specs() if s.name == settings.topics.lineage]))
    return settings


def test_no_lineage_record_no_snapshot(tmp_path: Path) -> None:
    store = a_table(tmp_path)
    unreachable = CommonSettings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", broker_flavor="kafka")
    with pytest.raises(LineageNotRecorded):
        open_snapshot("run-1", store_uri=store.uri, settings=unreachable, timeout_s=10)
    with pytest.raises(ValueError, match="run_id"):
        open_snapshot(" run-1", store_uri=store.uri, settings=unreachable)  # not a canonical identifier


def test_a_delete_committed_while_the_snapshot_is_recorded_makes_it_pin_the_new_version(
    broker: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = a_table(tmp_path)
    settings = lineage_settings(broker)
    publish = training._publish
    published: list[int] = []

    async def publish_then_purge(settings: CommonSettings, read: training.RunRead) -> None:
        await publish(settings, read)
        published.append(read.version)
        if len(published) == 1:  # the sink purges alice between the pin and the record's ack
            store.purge(["alice"])

    monkeypatch.setattr(training, "_publish", publish_then_purge)
    snapshot = open_snapshot("run-1", store_uri=store.uri, settings=settings)

    assert snapshot.version == store.version() == published[0] + 1
    assert sorted(snapshot.to_pyarrow_table(["post_id"]).column("post_id").to_pylist()) == ["bob-1"]
    records = [orjson.loads(r.value) for r in asyncio.run(read_all(settings.bootstrap_servers, settings.topics.lineage))]
    assert [(r["run_id"], r["version"], r["rows"]) for r in records] == [("run-1", published[0], 2), ("run-1", snapshot.version, 1)]


@pytest.mark.parametrize("kind", ["memory", "delta"])
def test_a_purge_reports_its_version_and_when_the_rows_it_removed_were_first_ingested(kind: str, tmp_path: Path) -> None:
    """What the sink feeds the lineage rule (consentry.domain.lineage) with."""
    store = MemoryTrainingStore() if kind == "memory" else DeltaTrainingStore(str(tmp_path / "training"))
    store.append([{**row("alice-1", "alice"), "ingested_at": "2025-05-27T10:00:05Z"}, row("bob-1", "bob")])
    store.append([{**row("alice-2", "alice"), "ingested_at": "2025-05-27T09:00:00Z"}])
    purged = store.purge_detailed(["alice", "nobody"])
    assert purged.version == store.version()
    assert purged.first_ingested_us == {"alice": parse_rfc3339("2025-05-27T09:00:00Z")}
    assert sorted(purged.removed["alice"]) == ["alice-1", "alice-2"]
    assert store.purge_detailed(["alice"]).version is None  # nothing left: no commit
