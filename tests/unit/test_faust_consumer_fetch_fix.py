"""The faust consumer fix (consentry/patches.py, install_faust_consumer_fetch_fix): records aiokafka handed over are
never skipped, and the patches refuse a faust they were not written for. The whole story, on
the real broker and processes: tests/reliability/test_crashes.py
(test_consent_replaced_before_its_first_commit_applies_every_acknowledged_event)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from faust.transport.utils import DefaultSchedulingStrategy

from consentry import patches as faust_fixes

A = TopicPartition("objections", 0)
B = TopicPartition("objections", 1)


class FakeFetcher:
    _closed = False

    def __init__(self) -> None:
        self.asked: list[frozenset] = []
        self._subscriptions = SimpleNamespace(fetch_context=lambda: _nothing())

    async def fetched_records(self, partitions, timeout=None, max_records=None):  # type: ignore[no-untyped-def]
        self.asked.append(partitions)
        return {}


class _nothing:
    def __enter__(self) -> None: ...
    def __exit__(self, *exc: object) -> None: ...


async def test_no_partition_active_fetches_nothing_and_a_snapshot_otherwise() -> None:
    fetcher = FakeFetcher()
    consumer = SimpleNamespace(_closed=False, _fetcher=fetcher)
    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))
    # aiokafka reads an empty set as "every partition": it must not be asked at all.
    assert await faust_fixes._fetch_records(thread, consumer, set(), timeout=1.0) == {}
    assert fetcher.asked == []
    active = {A}
    await faust_fixes._fetch_records(thread, consumer, active, timeout=1.0)
    active.discard(A)  # faust pauses it meanwhile, from the other thread
    assert fetcher.asked == [frozenset({A})]


class FakeAIOKafkaConsumer:
    def __init__(self, positions: dict) -> None:
        self.positions = positions
        self.seeks: list[tuple] = []

    async def position(self, tp):  # type: ignore[no-untyped-def]
        return self.positions[tp]

    def seek(self, tp, offset):  # type: ignore[no-untyped-def]
        self.seeks.append((tp, offset))
        self.positions[tp] = offset


def fake_faust_consumer(records: dict, active: set, client: FakeAIOKafkaConsumer) -> SimpleNamespace:
    async def wait_next_records(timeout):  # type: ignore[no-untyped-def]
        return records, active

    async def call_thread(fun, *args):  # type: ignore[no-untyped-def]
        return await fun(*args)

    return SimpleNamespace(
        _wait_next_records=wait_next_records,
        app=SimpleNamespace(consumer_generation_id=1, monitor=SimpleNamespace(track_tp_end_offset=lambda tp, hw: None)),
        should_stop=False,
        flow_active=True,
        scheduler=DefaultSchedulingStrategy(),
        _to_message=lambda tp, record: record.offset,
        _buffered_partitions=set(),
        highwater=lambda tp: None,
        _thread=SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: client),
        log=SimpleNamespace(dev=lambda *a: None, warning=lambda *a: None),
    )


def batch(*offsets: int) -> list:
    return [SimpleNamespace(offset=o) for o in offsets]


async def test_records_of_a_paused_partition_are_fetched_again_not_skipped() -> None:
    client = FakeAIOKafkaConsumer({A: 3, B: 7})  # aiokafka already moved past what it returned
    active = {A}  # B is paused
    consumer = fake_faust_consumer({A: batch(0, 1, 2), B: batch(5, 6)}, active, client)
    delivered = [(tp, offset) async for tp, offset in faust_fixes._getmany(consumer, 1.0)]
    assert delivered == [(A, 0), (A, 1), (A, 2)]
    assert client.seeks == [(B, 5)]  # faust 0.15.3 dropped 5 and 6 and read on from 7


async def test_a_partition_paused_during_the_batch_resumes_at_its_first_undelivered_record() -> None:
    client = FakeAIOKafkaConsumer({A: 3})
    active = {A}
    consumer = fake_faust_consumer({A: batch(0, 1, 2)}, active, client)
    delivered = []
    async for tp, offset in faust_fixes._getmany(consumer, 1.0):
        delivered.append(offset)
        active.discard(A)  # paused while the first record was being handled
    assert delivered == [0]
    assert client.seeks == [(A, 1)]


async def test_a_rebalance_during_the_batch_rewinds_the_rest_but_never_past_a_later_seek() -> None:
    client = FakeAIOKafkaConsumer({A: 0, B: 7})  # A was sought back to its committed offset (0) since
    consumer = fake_faust_consumer({A: batch(4, 5), B: batch(5, 6)}, {A, B}, client)
    delivered = []
    async for tp, offset in faust_fixes._getmany(consumer, 1.0):  # A@4, B@5, A@5, B@6
        delivered.append((tp, offset))
        consumer.app.consumer_generation_id = 2  # a rebalance: faust delivers nothing more
    assert delivered == [(A, 4)]
    assert client.seeks == [(B, 5)]  # A stays at 0
