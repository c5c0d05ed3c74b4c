"""Each embedded-broker defect consentry.patches works around, shown on the real broker,
with the workaround beside it. On Apache Kafka (KAFKA_BOOTSTRAP_SERVERS set) the defects do
not exist: the same tests then check that the workaround agrees with the broker. The defects
that need no broker are shown in tests/unit/test_patches.py.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from consentry import patches
from consentry.domain.model import ConsentState, HistoryEntry
from consentry.wire import encode_consent_state
from consentry.kafka import producer_options
from consentry.settings import CommonSettings
from tests.support.kafka import create_topic
from tests.support.system import System
from tests.support.wait import eventually


async def make_topic(bootstrap: str) -> str:
    return await create_topic(bootstrap, "patches")


async def send_one_batch(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for value in values:
            assert batch.append(key=b"k", value=value, timestamp=None) is not None
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def list_offsets_end(bootstrap: str, tp: TopicPartition) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def test_end_offsets_after_a_multi_record_batch(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker

    async def scenario() -> tuple[int, int]:
        topic = await make_topic(bootstrap)
        await send_one_batch(bootstrap, topic, [b"a", b"b", b"c", b"d", b"e"])
        tp = TopicPartition(topic, 0)
        return await list_offsets_end(bootstrap, tp), (await patches.true_end_offsets(bootstrap, [tp]))[tp]

    reported, true_end = asyncio.run(scenario())
    assert true_end == 5  # the workaround: the fetch high watermark
    if flavor == "tansu":
        assert reported == 1  # the defect: base offset of the last batch + 1
    else:
        assert reported == 5


def test_idempotent_producer(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor)
    assert producer_options(settings)["enable_idempotence"] is (flavor != "tansu")
    if flavor != "tansu":
        return

    async def idempotent_send() -> None:
        topic = await make_topic(bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(producer.start(), 15)
            await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 15)
        finally:
            await producer.stop()

    with pytest.raises(Exception):  # noqa: B017 - which error depends on the client's path; it never succeeds
        asyncio.run(idempotent_send())


@pytest.mark.parametrize("patched", [False, True], ids=["without the workaround", "with the workaround"])
def test_consent_table_recovery_from_a_changelog_ending_in_a_multi_record_batch(system: System, patched: bool) -> None:
    """A fresh consent service (no RocksDB) rebuilds its table from the changelog. The
    changelog's last batch holds several users' records; faust reads end offsets to know
    when recovery is done."""
    if system.env["CONSENTRY_BROKER_FLAVOR"] != "tansu" and not patched:
        pytest.skip("the defect is Tansu's")
    system.create_topics()
    users = [f"rec-{n}" for n in range(12)]  # several per partition
    home_users = users
    from consentry.partitioning import home_partition

    async def write_changelog() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, acks="all")
        await producer.start()
        try:
            by_partition: dict[int, list[str]] = {}
            for user in home_users:
                by_partition.setdefault(home_partition(user, system.partitions), []).append(user)
            for partition, members in by_partition.items():
                batch = producer.create_batch()
                for user in members:
                    entry = HistoryEntry(f"o-{user}", "object", 1_700_000_000_000_000, "import", enforced_at_us=1_700_000_000_000_001, purged_at_us=1_700_000_000_000_002)
                    state = ConsentState(user, (entry,), intervals=((1_700_000_000_000_000, None),), updated_at_us=1_700_000_000_000_002)
                    batch.append(key=user.encode(), value=encode_consent_state(state), timestamp=None)
                await (await producer.send_batch(batch, system.topics.consent_state, partition=partition))
        finally:
            await producer.stop()

    asyncio.run(write_changelog())
    flavor = "tansu" if patched else "kafka"  # 'kafka' leaves the broker workarounds of consentry.patches out
    system.start("consent", wait=False, env={"CONSENTRY_BROKER_FLAVOR": flavor})

    def ready_or_dead() -> bool:
        if system.processes["consent"].poll() is not None:
            return True
        try:
            return httpx.get(f"{system.url('consent')}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(ready_or_dead, timeout=90, what="consent recovered (or crashed)")
    process = system.processes["consent"]
    if process.poll() is not None:
        assert not patched, system.log("consent")[-3000:]
        assert "ConsistencyError" in system.log("consent")  # the defect, loud kind
        return
    statuses = {u: httpx.get(f"{system.url('consent')}/v1/user/status", params={"user_id": u}, timeout=5).json()["status"] for u in users}
    lost = sorted(u for u, status in statuses.items() if status != "purged")
    if patched:
        assert lost == []
    else:
        # The defect, silent kind: faust stopped reading each partition after its first record.
        print(f"without the workaround the recovered table lost {lost}")
        assert lost


def test_workarounds_switch_on_only_for_the_embedded_broker() -> None:
    assert CommonSettings(kafka_bootstrap_servers=None).on_embedded_broker
    assert not CommonSettings(kafka_bootstrap_servers="kafka:9092").on_embedded_broker
    assert CommonSettings(kafka_bootstrap_servers="127.0.0.1:9092", broker_flavor="tansu").on_embedded_broker
    assert patches.idempotent_producer_supported(CommonSettings(kafka_bootstrap_servers="kafka:9092"))
    assert not patches.idempotent_producer_supported(CommonSettings(kafka_bootstrap_servers=None))
