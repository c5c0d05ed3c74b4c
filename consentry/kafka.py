"""Kafka plumbing shared by the services: client options (connection and security), topic
creation, batched sends."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import ConsumerRecord

from consentry.settings import SYSTEM_TRUST, CommonSettings
from consentry.topics import TopicSpec

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
MAX_REQUEST_BYTES = 4 << 20  # a 1 MiB post plus its envelope must fit in one request


class TopicLayoutError(RuntimeError):
    """A topic exists with a partition count that breaks co-partitioning by user."""


class KafkaSecurityError(ValueError):
    """The Kafka security settings name a file that cannot be used; the message names the setting."""


TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """How every Kafka client of the system connects: bootstrap servers and security.

    Every AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient is built with
    `**client_options(settings)` (or `producer_options`, which extends it), and faust gets the
    same through `faust_credentials`: tests/unit/test_kafka_security.py checks every call site.
    Secrets are read from their files here, each time a client is built (a rotated file is
    picked up by the next client); they never pass through the environment or the logs.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "security_protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_username_file is not None and settings.kafka_sasl_password_file is not None  # settings check
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = read_secret("CONSENTRY_KAFKA_SASL_USERNAME_FILE", settings.kafka_sasl_username_file)
        options["sasl_plain_password"] = read_secret("CONSENTRY_KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file)
    return options


def ssl_context(settings: CommonSettings) -> ssl.SSLContext:
    """The TLS context toward the brokers: their certificates checked against the configured
    CA (or the system's store), host names checked, and the client certificate if any."""
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None if cafile == SYSTEM_TRUST else cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(f"CONSENTRY_KAFKA_SSL_CAFILE={cafile}: cannot load CA certificates from it ({exc})") from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        password_file = settings.kafka_ssl_key_password_file
        password = read_secret("CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE", password_file) if password_file is not None else ""
        try:
            # A password (empty if none) always: OpenSSL would otherwise prompt on the terminal.
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile, password=lambda: password)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"CONSENTRY_KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile} (CONSENTRY_KAFKA_SSL_KEYFILE={settings.kafka_ssl_keyfile}): "
                f"cannot load the client certificate and its key ({type(exc).__name__}: {exc}); is the key password right?"
            ) from exc
    return context


def read_secret(name: str, path: Path) -> str:
    """A secret from its file (one trailing newline dropped); `name` is the setting, for errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSecurityError(f"{name}={path}: cannot read it ({type(exc).__name__})") from exc
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise KafkaSecurityError(f"{name}={path}: the file is empty")
    return text


def faust_credentials(settings: CommonSettings) -> Any:
    """faust's `broker_credentials` for the same connection as `client_options` (None for
    PLAINTEXT): faust 0.15.3 hands them to every client it builds (producer, consumers, the
    topic-creating client) through its `credentials_to_aiokafka_auth`."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    options = client_options(settings)
    if protocol == "SSL":
        return SSLCredentials(options["ssl_context"])
    return SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        mechanism=options["sasl_mechanism"],
        ssl_context=options.get("ssl_context"),  # None: SASL_PLAINTEXT; a context: SASL_SSL
    )


def producer_options(settings: CommonSettings) -> dict[str, Any]:
    """acks=all everywhere; idempotence where the broker supports it (see consentry.patches)."""
    from consentry import patches

    return {
        **client_options(settings),
        "acks": "all",
        "max_request_size": MAX_REQUEST_BYTES,
        "enable_idempotence": patches.idempotent_producer_supported(settings),
    }


async def partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    described = await admin.describe_topics(list(names))
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def ensure_topics(settings: CommonSettings, specs: list[TopicSpec] | None = None, replication: int = 1) -> dict[str, int]:
    """Create missing topics; check that every user-keyed topic has `settings.partitions`.

    `posts` belongs to upstream: any partition count is accepted there.
    """
    specs = specs if specs is not None else settings.topics.specs()
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, settings.partitions, replication, topic_configs=dict(s.config)) for s in specs]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise TopicLayoutError(f"cannot create topic {name}: error {code} {message}")
        counts = await partition_counts(admin, [s.name for s in specs])
    finally:
        await admin.close()
    for spec in specs:
        if spec.user_keyed and counts.get(spec.name) != settings.partitions:
            raise TopicLayoutError(
                f"topic {spec.name} has {counts.get(spec.name)} partitions, expected "
                f"CONSENTRY_PARTITIONS={settings.partitions}: user-keyed topics must be co-partitioned"
            )
    return counts


async def wait_partitions(producer: AIOKafkaProducer, topic: str) -> int:
    return len(await producer.partitions_for(topic))


async def assign_whole_topic(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` to a started consumer without a group (nothing is
    committed): the readers that show a topic rather than share it. LookupError if it does not exist."""
    await consumer.topics()
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise LookupError(f"no topic {topic}")
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    return assigned



async def records_until(
    consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int], timeout: float, what: str
) -> AsyncIterator[ConsumerRecord]:
    """Every record an assigned consumer reads from its positions up to `ends` (exclusive: the
    end offsets taken before reading, by `consentry.patches.true_end_offsets`): how a reader
    without a group reads a topic to the end it has now. Records appended meanwhile are left
    for the next read: a fetch that brought them moves the position past them, so the position
    is set back to the end (the sink's lineage reader calls this again and again on one
    consumer; a record lost there is a training run missing from a purge receipt).
    TimeoutError, naming `what`, when not done within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not read to its end within {timeout:.0f}s (partitions {sorted(tp.partition for tp in pending)})")
        batch = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in batch.items():
            end = ends[tp]
            if records and records[-1].offset >= end:
                records = [r for r in records if r.offset < end]
                consumer.seek(tp, end)  # before yielding: however the caller stops, nothing past `end` is skipped
            for record in records:
                yield record
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}


class BatchSender:
    """Accumulates records per (topic, partition) into producer batches and sends them.

    Records handed to one partition keep their order: batches are queued in the order they
    are sent and aiokafka has at most one request in flight per broker connection.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._batches: dict[tuple[str, int], list[BatchBuilder]] = {}
        self._futures: list[asyncio.Future[Any]] = []

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """`headers`: a record's Kafka headers (the trace context of an objection's records)."""
        batches = self._batches.get((topic, partition))
        if batches is None:
            batches = self._batches[(topic, partition)] = [self._producer.create_batch()]
        if headers:
            listed = list(headers)  # aiokafka's C batch builder takes a list only
            if batches[-1].append(key=key, value=value, timestamp=None, headers=listed) is None:
                batches.append(self._producer.create_batch())
                batches[-1].append(key=key, value=value, timestamp=None, headers=listed)
        elif batches[-1].append(key=key, value=value, timestamp=None) is None:
            batches.append(self._producer.create_batch())
            batches[-1].append(key=key, value=value, timestamp=None)  # an empty batch always takes one

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every accumulated batch to the producer, in order per partition; return the
        futures of what was handed over (the next `flush` waits for them too)."""
        pending, self._batches = self._batches, {}
        # Forget futures already acknowledged; keep failed ones for `flush` to raise.
        self._futures = [f for f in self._futures if not f.done() or f.cancelled() or f.exception() is not None]
        sent = []
        for (topic, partition), batches in pending.items():
            for batch in batches:
                sent.append(await self._producer.send_batch(batch, topic, partition=partition))
        self._futures.extend(sent)
        return sent

    async def flush(self) -> None:
        """Send everything and wait until the broker acknowledged all of it (raises on failure)."""
        await self.send()
        futures, self._futures = self._futures, []
        if futures:
            await asyncio.gather(*futures)
