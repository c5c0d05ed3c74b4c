"""Run an asyncio service until SIGINT/SIGTERM, then stop it cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...
    _stopping: asyncio.Event


async def serve(service: Service) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service._stopping.set)
    await service.start()
    runner = asyncio.create_task(service.run())
    stopper = asyncio.create_task(service._stopping.wait())
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # a crash surfaces here: the supervisor restarts the process
        else:
            await runner
    finally:
        stopper.cancel()
        await service.stop()
