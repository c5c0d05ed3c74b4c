"""Workarounds for the embedded broker (Tansu 0.6.0, memory storage). Nothing else.

Every function here is a no-op, or the client's own behaviour, against Apache Kafka; the
workarounds switch on only when `settings.on_embedded_broker` is true. Each difference and
its consequence is listed in docs/reliability.md, and tests/integration/test_compat.py
shows each defect and its fix on the real broker.

1. ListOffsets(latest) is wrong: Tansu answers "base offset of the last batch + 1" when
   that batch held several records. The high watermark in fetch responses is right, so
   `true_end_offsets` asks a fetch instead. faust's table recovery reads end offsets to
   know when it has caught up; with Tansu's answer it crashes (ConsistencyError) or stops
   early and loses updates, so `install_faust_workarounds` routes it through here.
2. Idempotent and transactional producers fail (aiokafka sends InitProducerId v0 only):
   producers run with acks=all and no idempotence; duplicates from retries are absorbed
   downstream (the sink is idempotent by post_id, the consent table by objection_id).
3. A fetch over several partitions is not answered when data arrives, only when the long
   poll times out (about 0.5 s; a single-partition fetch is answered at once). faust polls
   with fetch_max_wait_ms=1500, hard-coded, so every objection waited up to half a second
   in the consent service (docs/benchmarks.md); `install_faust_workarounds` shortens it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

if TYPE_CHECKING:
    from consentry.settings import CommonSettings

log = logging.getLogger(__name__)

_faust_patched = False
FAUST_FETCH_MAX_WAIT_MS = 20  # Tansu answers a multi-partition fetch only at its timeout (3.)


def idempotent_producer_supported(settings: CommonSettings) -> bool:
    return not settings.on_embedded_broker


async def true_end_offsets(bootstrap: str, partitions: Iterable[TopicPartition], timeout: float = 10.0) -> dict[TopicPartition, int]:
    """End offsets from a fetch's high watermark (correct on Tansu, where ListOffsets is not)."""
    tps = list(partitions)
    if not tps:
        return {}
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        client_id="consentry-end-offset-probe",
    )
    await probe.start()
    try:
        probe.assign(tps)
        reported = await probe.end_offsets(tps)
        for tp in tps:
            # Fetching from the reported offset returns the last batch and the true watermark.
            probe.seek(tp, max(reported[tp] - 1, 0))
        deadline = time.monotonic() + timeout
        while any(probe.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                missing = [tp for tp in tps if probe.highwater(tp) is None]
                raise TimeoutError(f"no fetch high watermark for {missing} within {timeout}s")
            await probe.getmany(*tps, timeout_ms=50)
        return {tp: probe.highwater(tp) for tp in tps}
    finally:
        await probe.stop()


def install_faust_workarounds() -> None:
    """Make faust's table recovery read end offsets from fetch high watermarks."""
    global _faust_patched
    if _faust_patched:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
        if self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        bootstrap = consumer._client._bootstrap_servers
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        offsets = await true_end_offsets(bootstrap, tps)
        return {tp: offsets[TopicPartition(tp.topic, tp.partition)] for tp in partitions}

    thread_cls._highwaters = _highwaters

    create_worker_consumer = thread_cls._create_worker_consumer

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = FAUST_FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    _faust_patched = True
    log.info("embedded broker: faust end offsets now come from fetch high watermarks")
