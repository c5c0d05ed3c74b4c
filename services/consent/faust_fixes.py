"""A fix to faust-streaming 0.15.3 itself (not to the broker: it applies on Apache Kafka too).

Table writes reach the changelog through faust's ProducerBuffer, and faust commits a source
offset only after `producer.flush()`. But `ProducerBuffer.flush()` returns as soon as no
message left the buffer for 0.1 s, and does not count the message being handed to aiokafka
at that moment. On a busy machine it can return with changelog records still in the buffer;
the offset of the objection that caused them is committed; a crash then loses the records,
and a consent worker rebuilding its table from the changelog no longer knows the objection.
Seen once under kill -9 on a loaded 2-core machine (docs/reliability.md).

`install()` makes flush wait until the buffer is empty and nothing is being handed over.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.producer import ProducerBuffer

_installed = False


async def _flush_completely(self: Any) -> None:
    while True:
        if self.state != "running" and self.size:
            raise RuntimeError("Cannot flush: Producer not Running")
        if self.size == 0 and not getattr(self, "_handing_over", 0):
            return
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        except TimeoutError:
            pass  # still waiting: returning now could let an offset commit outrun its records


def install() -> None:
    global _installed
    if _installed:
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending_counted(self: Any, fut: Any) -> None:
        self._handing_over = getattr(self, "_handing_over", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._handing_over -= 1

    ProducerBuffer._send_pending = _send_pending_counted
    ProducerBuffer.flush = _flush_completely
    _installed = True
