"""Consumer lag read from outside the groups (consentry/group_lag.py) on the real broker: a
group's committed offsets against the high watermarks, whether or not the group has a member."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consentry.group_lag import GroupLagReader, group_lag
from consentry.kafka import ensure_topics
from consentry.scrape import parse_metrics, total
from consentry.settings import CommonSettings
from tests.support.kafka import produce


def test_the_lag_counts_from_the_committed_offset_or_from_the_log_start() -> None:
    tp = TopicPartition("t", 0)
    assert group_lag({tp: 10}, {tp: 0}, {tp: 4}) == {tp: 6}
    assert group_lag({tp: 10}, {tp: 3}, {}) == {tp: 7}  # nothing committed: all that is kept
    assert group_lag({tp: 10}, {tp: 0}, {tp: -1}) == {tp: 10}


async def test_a_group_without_members_shows_its_lag_from_its_commits(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=f"lag{uuid.uuid4().hex[:8]}-", partitions=2)
    await ensure_topics(settings)
    topic = settings.topics.training_posts
    await produce(bootstrap, topic, [(b"k", b"v")] * 5, partition=1)
    # The sink's group commits offset 2 on partition 1, then leaves: no member is left.
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.topics.group("sink"), enable_auto_commit=False)
    await member.start()
    try:
        tp = TopicPartition(topic, 1)
        member.assign([tp])
        await member.commit({tp: OffsetAndMetadata(2, "")})
    finally:
        await member.stop()

    reader = GroupLagReader(settings, timeout_s=10)
    try:
        lags = await reader.read()
        metrics = parse_metrics((await reader.metrics_text()).decode())
    finally:
        await reader.close()

    assert lags[settings.topics.group("sink")] == {TopicPartition(topic, 0): 0, TopicPartition(topic, 1): 3}
    assert total(metrics, "consentry_group_lag", group=settings.topics.group("sink"), partition="1") == 3
    assert total(metrics, "consentry_group_lag_up") == 1


async def test_an_unreachable_broker_is_a_zero_up_not_an_error() -> None:
    settings = CommonSettings(kafka_bootstrap_servers="127.0.0.1:9", broker_flavor="kafka")
    reader = GroupLagReader(settings, timeout_s=1)
    try:
        metrics = parse_metrics((await asyncio.wait_for(reader.metrics_text(), 30)).decode())
    finally:
        await reader.close()
    assert total(metrics, "consentry_group_lag_up") == 0 and not metrics.get("consentry_group_lag")
