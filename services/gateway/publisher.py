"""Publishing objection events: `publish` returns only once the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from opentelemetry.trace import SpanKind, StatusCode

from consentry.domain.model import Notice, ObjectionEvent
from consentry.wire import encode_notice, encode_objection
from consentry.importer import publish_events, publish_objections
from consentry.kafka import producer_options
from consentry import tracing
from consentry.logs import ids, user_ref
from consentry.partitioning import home_partition
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class PublishUnavailable(Exception):
    """The event is not known to be durable: the caller must not answer 202."""


class ObjectionPublisher(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(self, event: ObjectionEvent) -> None: ...

    @abstractmethod
    async def publish_many(self, events: Sequence[ObjectionEvent]) -> None:
        """Bulk (imports): returns once the broker acknowledged every event."""

    @abstractmethod
    async def publish_notices(self, notices: Sequence[Notice]) -> None:
        """Bulk import of notices: returns once the broker acknowledged every one."""

    @abstractmethod
    async def record_admin_action(self, actor: str, record: bytes) -> None:
        """Append one record to the admin actions topic; returns once the broker acknowledged it."""

    @abstractmethod
    async def broker_reachable(self) -> bool: ...


class KafkaObjectionPublisher(ObjectionPublisher):
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Start in the background: the gateway comes up (and answers 503) even while the
        # broker is down, and connects on its own when it is back.
        self._connector = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                **producer_options(self.settings),
                linger_ms=1,
                request_timeout_ms=int(self.settings.publish_timeout_s * 1000),
            )
            try:
                await producer.start()
                self._producer = producer
                log.info("gateway connected to the broker at %s", self.settings.bootstrap_servers)
                return
            except Exception as exc:
                await producer.stop()
                log.warning("broker not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, event: ObjectionEvent) -> None:
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("not connected to the broker yet")
        topic = self.settings.topics.objections
        partition = home_partition(event.user_id, self.settings.partitions)
        with tracing.span(
            "objection.publish", kind=SpanKind.PRODUCER, objection_id=event.objection_id, event_kind=str(event.kind),
            user=user_ref(event.user_id), **{"messaging.destination.name": topic, "messaging.destination.partition.id": str(partition)},
        ) as span:
            try:
                sent = await asyncio.wait_for(
                    producer.send_and_wait(
                        topic, encode_objection(event), key=event.user_id.encode(), partition=partition, headers=tracing.headers()
                    ),
                    timeout=self.settings.publish_timeout_s,
                )
            except Exception as exc:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                self._not_acknowledged(event, topic, partition, exc)
                raise PublishUnavailable(str(exc) or type(exc).__name__) from exc
            span.set_attribute("messaging.kafka.offset", sent.offset)
            log.info(
                "%s %s acknowledged by the broker", event.kind, event.objection_id,
                extra=ids(user_id=event.user_id, objection_id=event.objection_id, topic=topic, partition=partition, offset=sent.offset),
            )

    def _not_acknowledged(self, event: ObjectionEvent, topic: str, partition: int, exc: BaseException) -> None:
        log.error(
            "objection %s not acknowledged by the broker: %s", event.objection_id, type(exc).__name__,
            extra=ids(user_id=event.user_id, objection_id=event.objection_id, topic=topic, partition=partition),
        )

    async def publish_many(self, events: Sequence[ObjectionEvent]) -> None:
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("not connected to the broker yet")
        try:
            await publish_objections(producer, self.settings.topics.objections, self.settings.partitions, events)
        except Exception as exc:
            log.error("%d imported objections not acknowledged by the broker: %s", len(events), type(exc).__name__)
            raise PublishUnavailable(str(exc) or type(exc).__name__) from exc

    async def publish_notices(self, notices: Sequence[Notice]) -> None:
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("not connected to the broker yet")
        try:
            await publish_events(producer, self.settings.topics.notices, self.settings.partitions, notices, encode_notice)
        except Exception as exc:
            log.error("%d imported notices not acknowledged by the broker: %s", len(notices), type(exc).__name__)
            raise PublishUnavailable(str(exc) or type(exc).__name__) from exc

    async def record_admin_action(self, actor: str, record: bytes) -> None:
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("not connected to the broker yet")
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self.settings.topics.admin_actions, record, key=actor.encode()),
                timeout=self.settings.publish_timeout_s,
            )
        except Exception as exc:
            log.error("admin action record not acknowledged by the broker: %s", type(exc).__name__)
            raise PublishUnavailable(str(exc) or type(exc).__name__) from exc

    async def broker_reachable(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        try:
            return bool(await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2.0))
        except Exception:
            return False
