"""faust's producer buffer must not report a flush while changelog records are still in it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.transport.producer import ProducerBuffer

from services.consent import faust_fixes


class SlowChannel:
    """Hands each message over slowly, as a busy machine would."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut, wait: bool = False) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.25)
        self.published.append(fut.n)


async def test_flush_waits_for_every_buffered_record() -> None:
    faust_fixes.install()
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    channel = SlowChannel()
    await buffer.start()
    try:
        for n in range(3):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))
        await buffer.flush()  # faust's own flush gave up after 0.1 s without a send
        assert channel.published == [0, 1, 2]
    finally:
        await buffer.stop()
