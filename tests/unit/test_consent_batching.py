"""The consent agent's batches: events held for a short window, applied together, one row
write per user per batch, and acknowledged only after the batch is applied."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consentry.domain.model import ObjectionEvent
from consentry.wire import decode_consent_state, encode_objection
from services.consent.app import create_app
from services.consent import batching
from services.consent.batching import Batcher
from services.consent.settings import ConsentSettings
from tests.support.wait import eventually_async


class FakeStream:
    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log

    async def ack(self, event: object) -> bool:
        self.log.append(("ack", event))
        return True


def recorder(log: list[tuple[str, object]]):  # type: ignore[no-untyped-def]
    async def apply(events: list[object]) -> None:
        log.append(("apply", tuple(events)))

    return apply


async def test_a_batch_is_applied_whole_before_any_of_its_events_is_acknowledged() -> None:
    log: list[tuple[str, object]] = []
    batcher = Batcher(FakeStream(log), recorder(log), max_events=3, window=60.0)
    for event in ("e1", "e2", "e3", "e4"):
        await batcher.add(event)
    assert log == [("apply", ("e1", "e2", "e3")), ("ack", "e1"), ("ack", "e2"), ("ack", "e3")]


async def test_held_events_are_applied_when_the_window_ends_with_no_event_after_them() -> None:
    # A rebalance or a stop waits for every event taken to be acknowledged while the agent
    # waits for an event that will not come: the timer applies them.
    log: list[tuple[str, object]] = []
    batcher = Batcher(FakeStream(log), recorder(log), max_events=1000, window=0.02)
    await batcher.add("e1")
    await batcher.add("e2")
    assert log == []
    await eventually_async(lambda: asyncio.sleep(0, log == [("apply", ("e1", "e2")), ("ack", "e1"), ("ack", "e2")]), timeout=10, interval=0.01)
    await batcher.add("e3")  # the next batch starts its own window
    await eventually_async(lambda: asyncio.sleep(0, log[-2:] == [("apply", ("e3",)), ("ack", "e3")]), timeout=10, interval=0.01)


async def test_the_agent_ending_applies_what_it_still_holds() -> None:
    log: list[tuple[str, object]] = []
    batcher = Batcher(FakeStream(log), recorder(log), max_events=1000, window=60.0)
    async with batcher.running():
        await batcher.add("e1")
    assert log == [("apply", ("e1",)), ("ack", "e1")]


@pytest.fixture
def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = ConsentSettings(consent_store="memory://", kafka_bootstrap_servers="127.0.0.1:1", partitions=1, data_dir=tmp_path)
    app = create_app(settings)
    app.finalize()
    return app


async def test_a_users_events_in_one_batch_are_one_row_write(app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    agent = next(iter(app.agents.values()))
    table = app.tables["consent"]
    writes: list[tuple[bytes, bytes]] = []
    send_changelog = table.send_changelog

    def counted(partition, key, value, *args, **kwargs):  # type: ignore[no-untyped-def]
        writes.append((key, value))
        return send_changelog(partition, key, value, *args, **kwargs)  # the bound original

    monkeypatch.setattr(type(table), "send_changelog", lambda self, *a, **k: counted(*a, **k))
    monkeypatch.setattr(batching, "BATCH_WINDOW_SECONDS", 60.0)  # one batch, applied when the agent ends
    at = 1_700_000_000_000_000
    async with agent.test_context() as context:
        for n in range(3):
            event = ObjectionEvent(f"o-{n}", "u-1", "object" if n != 1 else "withdraw", at + n, "web")
            await context.put(key=b"u-1", value=encode_objection(event), wait=True)
        await context.put(key=b"u-2", value=encode_objection(ObjectionEvent("o-9", "u-2", "object", at, "import")), wait=True)
    assert sorted(key for key, _ in writes) == [b"u-1", b"u-2"]
    state = decode_consent_state(table[b"u-1"])
    assert [e.objection_id for e in state.history] == ["o-0", "o-1", "o-2"]
    assert decode_consent_state(table[b"u-2"]).history[0].objection_id == "o-9"
