"""The consent agent under faust's test_context(): in memory, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from consentry.events import ObjectionEvent, decode_consent_state, encode_objection
from services.consent.app import create_app
from services.consent.settings import ConsentSettings


@pytest.fixture
def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = ConsentSettings(consent_store="memory://", kafka_bootstrap_servers="127.0.0.1:1", partitions=1, data_dir=tmp_path)
    app = create_app(settings)
    app.finalize()
    return app


async def test_objections_land_in_the_table_once(app) -> None:  # type: ignore[no-untyped-def]
    agent = next(iter(app.agents.values()))
    table = app.tables["consent"]
    event = ObjectionEvent("o-1", "u-1", "object", 1_700_000_000_000_000, "web", "no thanks")
    async with agent.test_context() as context:
        await context.put(key=b"u-1", value=encode_objection(event))
        await context.put(key=b"u-1", value=encode_objection(event))  # re-delivered
        await context.put(key=b"u-1", value=b"{not json")  # skipped, counted, never crashes
    state = decode_consent_state(table[b"u-1"])
    assert [e.objection_id for e in state.history] == ["o-1"]
    assert state.intervals == ((1_700_000_000_000_000, None),)
    assert state.pending == ("o-1",)
