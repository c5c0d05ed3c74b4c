"""The Kafka worker skeleton (consentry/kafka_worker.py) on a fake consumer: hold until
loaded, hand over only what is still ours, flush on size and time, commit only what is
acknowledged, flush and commit before a revocation, one owner of pause and resume."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY

from consentry.kafka_worker import Batch, Bounds, Flushed, KafkaWorker

P0, P1, OLD = TopicPartition("posts", 0), TopicPartition("posts", 1), TopicPartition("posts", 7)


def records(start: int, count: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=o, value=f"v{o}".encode()) for o in range(start, start + count)]


class FakeConsumer:
    """What the skeleton uses of AIOKafkaConsumer. A rebalance revokes, then assigns fresh
    (unpaused) partitions, as aiokafka's eager protocol does."""

    def __init__(self) -> None:
        self.queued: dict[TopicPartition, list] = {}
        self.paused: set[TopicPartition] = set()
        self._assignment: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.polls: list[int] = []
        self.highwaters: dict[TopicPartition, int] = {}
        self.during_poll: Callable[[], Awaitable[dict]] | None = None  # a rebalance while getmany waits

    async def start(self) -> None:
        pass

    def subscribe(self, topics: list[str], listener) -> None:  # type: ignore[no-untyped-def]
        self.listener = listener

    async def rebalance(self, assigned: set[TopicPartition]) -> None:
        await self.listener.on_partitions_revoked(set(self._assignment))
        self._assignment, self.paused = set(assigned), set()
        await self.listener.on_partitions_assigned(set(assigned))

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.polls.append(timeout_ms)
        if self.during_poll is not None:
            fetched, self.during_poll = self.during_poll, None
            return await fetched()
        batch = {tp: recs for tp, recs in self.queued.items() if recs and tp in self._assignment and tp not in self.paused}
        for tp in batch:
            del self.queued[tp]
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class Service(KafkaWorker):
    """A service that records what the skeleton asks of it."""

    def __init__(self, bounds: Bounds, loads_at_once: bool = True) -> None:
        super().__init__("skeleton-test", bounds, clock=lambda: self.now)
        self.now = 100.0
        self.loads_at_once = loads_at_once
        self.loaded = False
        self.full = False
        self.calls: list[str] = []
        self.handled: list[tuple[TopicPartition, int]] = []  # (partition, offset)
        self.acks: list[asyncio.Future] = []  # one per flush, when `acknowledged` is False
        self.acknowledged = True
        self._positions: dict[TopicPartition, int] = {}

    async def on_assigned(self, partitions: set[TopicPartition]) -> bool:
        self.calls.append(f"on_assigned paused={sorted(p.partition for p in self.consumer.paused)}")
        return self.loads_at_once

    async def load(self) -> bool:
        self.calls.append("load")
        return self.loaded

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.calls.append(f"on_revoked after {len(self.consumer.commits)} commits")

    async def tick(self, ready: bool) -> bool:
        return self.full

    async def handle(self, batch: Batch) -> int:
        for tp, recs in batch.items():
            self.handled += [(tp, r.offset) for r in recs]
            self._positions[tp] = recs[-1].offset + 1
        return sum(len(r) for r in batch.values())

    async def flush(self) -> Flushed:
        self.calls.append("flush")
        positions, self._positions = self._positions, {}
        if self.acknowledged:
            return Flushed(positions)
        ack = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return Flushed(positions, [ack])


BOUNDS = Bounds(max_records=100, poll_ms=1000, flush_records=3, flush_seconds=1.0)


async def started(service: Service, assigned: set[TopicPartition] | None = None) -> FakeConsumer:
    consumer = FakeConsumer()
    await service.start_consumer(consumer, ["posts"])  # type: ignore[arg-type]
    await consumer.rebalance(assigned if assigned is not None else {P0})
    return consumer


async def test_new_partitions_are_held_until_the_service_has_loaded_their_state() -> None:
    service = Service(BOUNDS, loads_at_once=False)
    consumer = await started(service, {P0, P1})
    assert service.calls[-1] == "on_assigned paused=[0, 1]"  # held before the service awaits anything
    assert service.held == {P0, P1} and consumer.paused == {P0, P1}
    consumer.queued = {P0: records(0, 2)}
    await service.step()
    # Loading goes on a chunk per turn, and the loop polls between chunks without waiting (the
    # group's max.poll.interval.ms), but hands nothing of a held partition over.
    assert service.calls[-1] == "load" and consumer.polls == [0] and service.handled == []
    service.loaded = True
    await service.step()
    assert service.held == set() and consumer.paused == set()
    assert service.handled == [(P0, 0), (P0, 1)]


async def test_a_load_longer_than_the_poll_interval_keeps_polling_and_a_revocation_stops_it() -> None:
    service = Service(BOUNDS, loads_at_once=False)
    consumer = await started(service, {P0})
    for _ in range(3):
        await service.step()
    assert service.calls.count("load") == 3 and consumer.polls == [0, 0, 0]

    async def revoked_meanwhile() -> dict:
        await consumer.listener.on_partitions_revoked({P0})
        return {}

    consumer.during_poll = revoked_meanwhile
    await service.step()
    await service.step()
    assert service.calls.count("load") == 4  # nothing of a revoked partition is loaded
    await consumer.rebalance({P1})
    service.loaded = True
    await service.step()
    assert service.calls.count("load") == 5 and service.held == set() and consumer.paused == set()


async def test_a_service_that_loads_in_on_assigned_reads_at_once() -> None:
    service = Service(BOUNDS)
    consumer = await started(service, {P0})
    assert service.calls[-1] == "on_assigned paused=[0]"
    assert service.held == set() and consumer.paused == set()


async def test_records_fetched_before_a_rebalance_are_dropped_or_read_again_once_loaded() -> None:
    service = Service(BOUNDS, loads_at_once=False)
    service.loaded = True
    consumer = await started(service, {OLD})
    await service.step()  # OLD loaded and released

    async def rebalanced_meanwhile() -> dict:
        await consumer.rebalance({P0})
        return {P0: records(5, 2), OLD: records(9, 1)}

    consumer.during_poll = rebalanced_meanwhile
    await service.step()
    assert service.handled == []
    assert consumer.seeks == [(P0, 5)]  # held: read again from its first record once loaded


async def test_a_batch_is_flushed_once_enough_records_wait_or_flush_seconds_after_the_first() -> None:
    service = Service(BOUNDS)
    consumer = await started(service)
    consumer.queued = {P0: records(0, 2)}
    await service.step()
    assert "flush" not in service.calls
    service.now += 0.375
    consumer.queued = {P0: records(2, 1)}
    await service.step()
    assert consumer.polls[-1] == 625  # no longer than until the time bound
    assert service.calls[-1] == "flush" and consumer.commits == [{P0: 3}]  # three records: the size bound
    consumer.queued = {P0: records(3, 1)}
    await service.step()
    assert consumer.commits == [{P0: 3}]
    service.now += 1.0
    await service.step()
    assert consumer.commits == [{P0: 3}, {P0: 4}]  # the time bound
    assert service.calls.count("flush") == 2


async def test_positions_are_committed_only_once_their_flush_is_acknowledged() -> None:
    service = Service(Bounds(max_records=100, poll_ms=50, flush_records=100, flush_seconds=0.0, in_flight=1))
    service.acknowledged = False
    consumer = await started(service)
    consumer.queued = {P0: records(0, 2)}
    await service.step()
    assert consumer.commits == []  # one flush may travel while the next batch is read
    service.acks[0].set_result(None)
    consumer.queued = {P0: records(2, 2)}
    await service.step()
    assert consumer.commits == [{P0: 2}]  # the first, acknowledged; the second still in flight
    service.acks[1].set_result(None)
    await service.step()  # nothing read: everything acknowledged is committed
    assert consumer.commits == [{P0: 2}, {P0: 4}]


async def test_a_failed_send_commits_nothing_read_after_it() -> None:
    service = Service(Bounds(max_records=100, poll_ms=50, flush_records=100, flush_seconds=0.0))
    service.acknowledged = False
    consumer = await started(service)
    consumer.queued = {P0: records(0, 2)}
    task = asyncio.create_task(service.step())
    while not service.acks:
        await asyncio.sleep(0)
    service.acks[0].set_exception(KafkaError("broker gone"))
    with pytest.raises(KafkaError):
        await task
    assert consumer.commits == []


async def test_while_busy_commits_come_at_most_every_commit_every_seconds() -> None:
    service = Service(Bounds(max_records=100, poll_ms=50, flush_records=100, flush_seconds=0.0, in_flight=1, commit_every_seconds=0.2))
    consumer = await started(service)
    for offset in range(4):
        consumer.queued = {P0: records(offset, 1)}
        await service.step()
        service.now += 0.125
    assert consumer.commits == [{P0: 1}, {P0: 3}]  # at 100.125 and 100.375; not at 100.25
    await service.step()  # idle: everything, at once
    assert consumer.commits == [{P0: 1}, {P0: 3}, {P0: 4}]


async def test_a_revocation_flushes_and_commits_before_the_service_drops_its_state() -> None:
    service = Service(BOUNDS)
    consumer = await started(service)
    consumer.queued = {P0: records(0, 1)}
    await service.step()
    assert consumer.commits == []
    await consumer.rebalance({P1})
    assert service.calls[-3:] == ["flush", "on_revoked after 1 commits", "on_assigned paused=[1]"]
    assert consumer.commits == [{P0: 1}]
    assert service.assigned == {P1}


async def test_over_its_memory_bound_the_service_reads_nothing_until_under_again() -> None:
    service = Service(BOUNDS)
    consumer = await started(service, {P0, P1})
    service.full = True
    await service.step()
    assert consumer.paused == {P0, P1}
    consumer.queued = {P0: records(0, 1)}
    await service.step()
    assert service.handled == []
    service.full = False
    await service.step()
    assert consumer.paused == set() and service.handled == [(P0, 0)]


async def test_a_partition_is_read_only_once_loaded_and_under_the_memory_bound() -> None:
    service = Service(BOUNDS, loads_at_once=False)
    consumer = await started(service, {P0})
    service.full = True
    await service.step()
    service.full = False
    await service.step()
    assert consumer.paused == {P0} and service.held == {P0}  # under the bound, still loading
    service.full = True
    await service.step()
    service.loaded = True
    await service.step()
    assert consumer.paused == {P0} and service.held == set()  # loaded, over the bound
    service.full = False
    consumer.queued = {P0: records(0, 1)}
    await service.step()
    assert consumer.paused == set() and service.handled == [(P0, 0)]


async def test_stopping_flushes_and_commits_what_is_pending() -> None:
    service = Service(BOUNDS)
    consumer = await started(service)
    consumer.queued = {P0: records(0, 2)}
    await service.step()
    await service.stop_consuming()
    assert consumer.commits == [{P0: 2}]
    await service.run()  # returns at once: stopping


async def test_the_lag_gauge_shows_records_behind_the_high_watermark() -> None:
    service = Service(BOUNDS)
    consumer = await started(service)
    consumer.highwaters = {P0: 10}
    consumer.queued = {P0: records(0, 3)}
    await service.step()
    lag = REGISTRY.get_sample_value("consentry_consumer_lag", {"service": "skeleton-test", "topic": "posts", "partition": "0"})
    assert lag == 7
