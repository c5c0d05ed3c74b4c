"""`consentry topics`: the one-shot step docker-compose.yml and the k8s Job run before the services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consentry.topics import Topics


def run_topics(bootstrap: str, flavor: str, prefix: str, partitions: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CONSENTRY_BROKER_FLAVOR": flavor,
        "CONSENTRY_TOPIC_PREFIX": prefix,
        "CONSENTRY_PARTITIONS": str(partitions),
    }
    return subprocess.run([sys.executable, "-m", "consentry_cli", "topics"], env=env, capture_output=True, text=True, timeout=60)


async def describe(bootstrap: str, names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for _code, _message, _type, name, entries in response.resources:
                configs[name] = {entry[0]: entry[1] for entry in entries}
        return partitions, configs
    finally:
        await admin.close()


def test_topics_command_creates_every_topic_with_its_partitions_and_compaction(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    topics = Topics(prefix)

    result = run_topics(bootstrap, flavor, prefix, partitions=3)

    assert result.returncode == 0, result.stderr
    names = [spec.name for spec in topics.specs()]
    partitions, configs = asyncio.run(describe(bootstrap, names))
    assert partitions == {name: 3 for name in names}
    assert configs[topics.consent_state]["cleanup.policy"] == "compact"
    assert configs[topics.posts]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert topics.consent_state in result.stderr  # it lists what it found


def test_topics_command_refuses_a_partition_count_that_breaks_co_partitioning(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    assert run_topics(bootstrap, flavor, prefix, partitions=3).returncode == 0

    again = run_topics(bootstrap, flavor, prefix, partitions=4)

    assert again.returncode == 1
    assert "expected CONSENTRY_PARTITIONS=4" in again.stderr
