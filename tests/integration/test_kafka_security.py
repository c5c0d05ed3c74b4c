"""The Kafka clients over real TLS and SASL (issue 14): the embedded broker behind stunnel with
mutual TLS (`tls_cluster`, tests/support/tls.py), and behind stunnel plus a SASL terminator
(SASL_SSL with PLAIN or SCRAM, tests/support/sasl.py). Clients are built as the services build
them, from the settings through `client_options` / `producer_options`; a wrong CA, a missing
client certificate or a wrong password is refused."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from consentry import patches
from consentry.kafka import client_options, ensure_topics, producer_options
from consentry.kafka_worker import group_consumer
from consentry.settings import CommonSettings
from tests.support.sasl import PASSWORD, USER, SaslTerminator
from tests.support.tls import SecuredBroker, make_pki


def settings_for(cluster: SecuredBroker, **overrides: str) -> CommonSettings:
    return CommonSettings(
        kafka_bootstrap_servers=cluster.bootstrap, broker_flavor="tansu", topic_prefix=f"t{uuid.uuid4().hex[:10]}-", partitions=2,
        **cluster.settings_kwargs(**overrides),
    )


async def round_trip(settings: CommonSettings) -> list[bytes]:
    """Create the topics (admin client), publish (producer), read back in a group (consumer)
    and find the end offsets (the end-offset probe): every kind of client the services build."""
    await ensure_topics(settings)
    topic = settings.topics.objections
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        for n in range(2):
            await producer.send_and_wait(topic, f"event-{n}".encode(), key=b"u-1", partition=n)
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, n) for n in range(2)]
    assert await patches.true_end_offsets(client_options(settings), tps) == {tp: 1 for tp in tps}
    consumer = group_consumer(client_options(settings), settings.topics.group("tls-test"), "tls-test", session_timeout_ms=3000, heartbeat_interval_ms=500)
    consumer.subscribe([topic])
    await consumer.start()
    values: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(values) < 2 and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            values += [r.value for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return sorted(values)


async def refused(settings: CommonSettings, caplog: pytest.LogCaptureFixture) -> str:
    """Start a producer that must not get through; return what aiokafka logged about why."""
    producer = AIOKafkaProducer(**producer_options(settings), request_timeout_ms=5000)
    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        with pytest.raises(KafkaError):
            await producer.start()
    await producer.stop()
    return caplog.text


# ------------------------------------------------------------------ TLS (mutual)


async def test_every_kind_of_client_works_over_mutual_tls(tls_cluster: SecuredBroker) -> None:
    assert await round_trip(settings_for(tls_cluster)) == [b"event-0", b"event-1"]


async def test_a_broker_certificate_signed_by_another_ca_is_refused(tls_cluster: SecuredBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other = make_pki(tmp_path / "other", "other")
    why = await refused(settings_for(tls_cluster, CONSENTRY_KAFKA_SSL_CAFILE=str(other.ca)), caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in why


async def test_a_client_without_its_certificate_is_refused_by_a_mutual_tls_cluster(tls_cluster: SecuredBroker) -> None:
    settings = CommonSettings(
        kafka_bootstrap_servers=tls_cluster.bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=str(tls_cluster.pki.ca), broker_flavor="tansu"
    )
    producer = AIOKafkaProducer(**producer_options(settings), request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()


async def test_a_plaintext_client_gets_nothing_from_the_tls_port(tls_cluster: SecuredBroker) -> None:
    """What the settings protect against: the same address without TLS is not a Kafka broker."""
    consumer = AIOKafkaConsumer(**client_options(CommonSettings(kafka_bootstrap_servers=tls_cluster.bootstrap)), request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await consumer.start()
    await consumer.stop()


# ------------------------------------------------------------------ SASL_SSL


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_every_kind_of_client_works_over_sasl_ssl(sasl_cluster: tuple[SecuredBroker, SaslTerminator], mechanism: str) -> None:
    cluster, terminator = sasl_cluster
    before = len(terminator.authenticated)
    assert await round_trip(settings_for(cluster, CONSENTRY_KAFKA_SASL_MECHANISM=mechanism)) == [b"event-0", b"event-1"]
    assert set(terminator.authenticated[before:]) == {(USER, mechanism)}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_sasl_password_is_refused(
    sasl_cluster: tuple[SecuredBroker, SaslTerminator], mechanism: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster, terminator = sasl_cluster
    (tmp_path / "password").write_text(PASSWORD + "-wrong\n")
    settings = settings_for(cluster, CONSENTRY_KAFKA_SASL_MECHANISM=mechanism, CONSENTRY_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "password"))
    before = len(terminator.refused)
    assert "SaslAuthenticationFailed" in await refused(settings, caplog)
    assert (USER, mechanism) in terminator.refused[before:]
