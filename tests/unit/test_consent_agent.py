"""The consent agent under faust's test_context(): in memory, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

import orjson

from consentry.domain.model import ObjectionEvent
from consentry.wire import decode_consent_state, encode_objection
from services.consent import agents
from services.consent.app import create_app
from services.consent.settings import ConsentSettings


@pytest.fixture
def sent_records(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes | None, bytes, int | None]]:
    """What the agent sent and waited for (dead letters, re-homed events): (topic, key, value, partition)."""
    records: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def send_acknowledged(topic, key, value, partition, what):  # type: ignore[no-untyped-def]
        records.append((topic.get_topic_name(), key, value, partition))

    monkeypatch.setattr(agents, "send_acknowledged", send_acknowledged)
    return records


@pytest.fixture
def app(tmp_path: Path, sent_records):  # type: ignore[no-untyped-def]
    settings = ConsentSettings(consent_store="memory://", kafka_bootstrap_servers="127.0.0.1:1", partitions=1, data_dir=tmp_path)
    app = create_app(settings)
    app.finalize()
    return app


async def test_objections_land_in_the_table_once(app, sent_records) -> None:  # type: ignore[no-untyped-def]
    agent = next(iter(app.agents.values()))
    table = app.tables["consent"]
    event = ObjectionEvent("o-1", "u-1", "object", 1_700_000_000_000_000, "web", "no thanks")
    async with agent.test_context() as context:
        await context.put(key=b"u-1", value=encode_objection(event))
        await context.put(key=b"u-1", value=encode_objection(event))  # re-delivered
        await context.put(key=b"u-1", value=b"{not json")  # a dead letter, never a crash
    state = decode_consent_state(table[b"u-1"])
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
    state = decode_consent_state(table[b"u-2"])
    assert [(orjson.loads(value)["topic"], orjson.loads(value)["reason_code"]) for _t, _k, value, _p in sent_records] == [("notices", "missing_field")]
    assert [(n.notice_id, n.notice_version, n.country) for n in state.notices] == [("n-1", "v1", "FR")]
    assert state.history == ()
