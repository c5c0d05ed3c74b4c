"""Issue 16 (purge latency): a purge is confirmed once its Delta delete is committed, not after
the rest of its batch. The flush's de-duplication look-up reads every file of the batch's
buckets (it grows with the table) and its append follows; a purged receipt that waited for both
made each purge wait for a whole flush of posts (bench row 4: purged p99 41 s)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from consentry.domain.model import PURGED, Invalid
from consentry.wire import parse_receipt
from services.sink.store import DeltaTrainingStore
from tests.support.kafka import read_all
from tests.support.sink import RunningSink, create_sink_topics, post_message, publish, purge_message, sink_settings, stored_ids, user_in
from tests.support.wait import eventually_async


class LookupHeldStore(DeltaTrainingStore):
    """The real table; the de-duplication look-up of a batch holding `held_post` waits for `release`."""

    held_post = "b-2"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looking_up = threading.Event()
        self.release = threading.Event()

    def stored_post_ids(self, rows: list[dict[str, Any]]) -> set[str]:
        if any(row["post_id"] == self.held_post for row in rows):
            self.looking_up.set()
            self.release.wait(60)  # never forever: the sink must stop at the test's end
        return super().stored_post_ids(rows)


async def purged_users(settings) -> set[str]:  # type: ignore[no-untyped-def]
    users = set()
    for record in await read_all(settings.bootstrap_servers, settings.topics.receipts, timeout=5):
        receipt = parse_receipt(record.value)
        if type(receipt) is not Invalid and receipt.kind == PURGED:
            users.add(receipt.user_id)
    return users


async def test_a_purge_is_confirmed_before_its_batch_s_de_duplication_and_append(broker: tuple[str, str], tmp_path: Path) -> None:
    settings = sink_settings(*broker, tmp_path, training_store_buckets=8, reconcile_interval_s=0, compact_interval_s=0, vacuum_interval_s=0)
    await create_sink_topics(settings)
    # One partition: the marker and the post are produced together, so read in one batch.
    alice, bob = user_in(0, settings.partitions, "alice"), user_in(0, settings.partitions, "bob")
    running = RunningSink(settings)
    store = LookupHeldStore(settings.store_uri, None, settings.training_store_buckets)
    running.worker._store = store
    async with running:
        await publish(settings, (alice, post_message("a-1", alice)), (bob, post_message("b-1", bob)))

        async def first() -> bool:
            return stored_ids(settings) == {"a-1", "b-1"}
        await eventually_async(first, timeout=60, what="the first posts stored")
        # One batch: alice's purge marker and a post of bob's, whose look-up is held.
        await publish(settings, (alice, purge_message(alice)), (bob, post_message("b-2", bob)))
        try:
            async def confirmed() -> bool:
                assert store.looking_up.is_set(), "the batch's de-duplication look-up has not started"
                return alice in await purged_users(settings)
            await eventually_async(confirmed, timeout=30, what="alice's purged receipt while her batch's de-duplication look-up is held")
            assert "a-1" not in stored_ids(settings)  # confirmed means deleted
        finally:
            store.release.set()

        async def appended() -> bool:
            return stored_ids(settings) == {"b-1", "b-2"}
        await eventually_async(appended, timeout=60, what="bob's post appended once the look-up is released")
