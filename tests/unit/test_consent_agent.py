"""The consent agent under faust's test_context(): in memory, no broker. The agent applies a
batch of events at a time (services/consent/rows.py): a test waits for the rows it expects,
inside the context, where the batch is written."""

from __future__ import annotations

from pathlib import Path

import pytest

import orjson

from consentry.domain.model import ObjectionEvent
from consentry.wire import decode_consent_state, encode_objection
from services.consent import agents
from services.consent.app import create_app
from services.consent.rows import StagedRows
from services.consent.settings import ConsentSettings
from tests.support.wait import eventually_async


async def _true(value):  # type: ignore[no-untyped-def]
    return bool(value)


@pytest.fixture
def sent_records(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes | None, bytes, int | None]]:
    """What the agent sent and waited for (dead letters, re-homed events): (topic, key, value, partition)."""
    records: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def send_acknowledged(topic, key, value, partition, what):  # type: ignore[no-untyped-def]
        records.append((topic.get_topic_name(), key, value, partition))

    monkeypatch.setattr(agents, "send_acknowledged", send_acknowledged)
    return records


class RecordedChangelog:
    """The changelog as a list (test_context() has no broker): each batch's rows, acknowledged at once."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[bytes, int, bytes]]] = []

    async def write(self, rows: StagedRows) -> dict[int, int]:
        self.batches.append([(key, row.partition, row.value) for key, row in rows.items()])
        offset = sum(len(batch) for batch in self.batches) - 1
        return {row.partition: offset for _key, row in rows.items()}

    def records(self) -> list[tuple[bytes, int, bytes]]:
        return [record for batch in self.batches for record in batch]


@pytest.fixture
def changelog() -> RecordedChangelog:
    return RecordedChangelog()


@pytest.fixture
def app(tmp_path: Path, sent_records, changelog):  # type: ignore[no-untyped-def]
    settings = ConsentSettings(consent_store="memory://", kafka_bootstrap_servers="127.0.0.1:1", partitions=1, data_dir=tmp_path)
    app = create_app(settings, rows_changelog=changelog)
    app.finalize()
    return app


async def row_of(table, key: bytes, probe=lambda state: True):  # type: ignore[no-untyped-def]
    """The user's row once the agent has written one that `probe` accepts."""

    async def written():  # type: ignore[no-untyped-def]
        raw = table.data.data.get(key)
        return raw is not None and probe(decode_consent_state(raw)) and decode_consent_state(raw)

    return await eventually_async(written, timeout=10, interval=0.01, what=f"the row of {key!r}")


async def test_objections_land_in_the_table_once(app, sent_records) -> None:  # type: ignore[no-untyped-def]
    agent = next(iter(app.agents.values()))
    table = app.tables["consent"]
    event = ObjectionEvent("o-1", "u-1", "object", 1_700_000_000_000_000, "web", "no thanks")
    async with agent.test_context() as context:
        await context.put(key=b"u-1", value=encode_objection(event))
        await context.put(key=b"u-1", value=encode_objection(event))  # re-delivered
        await context.put(key=b"u-1", value=b"{not json")  # a dead letter, never a crash
        state = await row_of(table, b"u-1")
        await eventually_async(lambda: _true(sent_records), timeout=10, interval=0.01, what="the dead letter")
    assert [e.objection_id for e in state.history] == ["o-1"]
    [(topic, key, value, _partition)] = sent_records
    letter = orjson.loads(value)
    assert (topic, key) == ("consentry.consent-dead-letters", b"u-1")
    assert (letter["reason_code"], letter["topic"], letter["offset"], letter["value"]) == ("invalid_json", "objections", 2, "{not json")
    assert state.intervals == ((1_700_000_000_000_000, None),)
    assert state.pending == ("o-1",)


async def test_notices_land_in_the_table_once(app, sent_records) -> None:  # type: ignore[no-untyped-def]
    from faust.types import TP

    from consentry.domain.model import Notice
    from consentry.wire import encode_notice

    agent = next(iter(app.agents.values()))
    table = app.tables["consent"]
    topic = "notices"  # no topic prefix in these settings
    sent = Notice("n-1", "u-2", "v1", "email", 1_700_000_000_000_000, "FR")
    async with agent.test_context() as context:
        # test_context() names no topic for a multi-topic agent: say these come from `notices`.
        to_message = context.to_message

        def from_notices(*args, **kwargs):  # type: ignore[no-untyped-def]
            message = to_message(*args, **kwargs)
            message.topic, message.tp = topic, TP(topic, message.partition)
            return message

        context.to_message = from_notices
        for _ in range(2):  # the second one is a re-delivery
            await context.put(key=b"u-2", value=encode_notice(sent))
        await context.put(key=b"u-2", value=b'{"notice_id": "n-2"}')  # a dead letter
        state = await row_of(table, b"u-2")
        await eventually_async(lambda: _true(sent_records), timeout=10, interval=0.01, what="the dead letter")
    assert [(orjson.loads(value)["topic"], orjson.loads(value)["reason_code"]) for _t, _k, value, _p in sent_records] == [("notices", "missing_field")]
    assert [(n.notice_id, n.notice_version, n.country) for n in state.notices] == [("n-1", "v1", "FR")]
    assert state.history == ()


async def test_a_batch_writes_each_users_row_once_with_the_state_after_all_its_events(tmp_path: Path, sent_records) -> None:  # type: ignore[no-untyped-def]
    """Three notices to one user in one batch: one row written, one changelog record, holding
    all three (the batch is full at 3 events, so it does not depend on timing)."""
    from consentry.domain.model import Notice
    from consentry.wire import encode_notice
    from faust.types import TP

    changelog = RecordedChangelog()
    settings = ConsentSettings(
        consent_store="memory://", kafka_bootstrap_servers="127.0.0.1:1", partitions=1, data_dir=tmp_path,
        consent_batch_max=3, consent_batch_within_ms=60_000,
    )
    app = create_app(settings, rows_changelog=changelog)
    app.finalize()
    agent = next(iter(app.agents.values()))
    async with agent.test_context() as context:
        to_message = context.to_message

        def from_notices(*args, **kwargs):  # type: ignore[no-untyped-def]
            message = to_message(*args, **kwargs)
            message.topic, message.tp = "notices", TP("notices", message.partition)
            return message

        context.to_message = from_notices
        for n in range(3):
            await context.put(key=b"u-3", value=encode_notice(Notice(f"n-{n}", "u-3", "v1", "email", 1_700_000_000_000_000 + n, "FR")), wait=False)
        await eventually_async(lambda: _true(changelog.batches), timeout=10, interval=0.01, what="the batch written")
    [[(key, partition, value)]] = changelog.batches
    assert (key, partition) == (b"u-3", 0)
    assert [n.notice_id for n in decode_consent_state(value).notices] == ["n-0", "n-1", "n-2"]
    assert app.tables["consent"].data.data[b"u-3"] == value
