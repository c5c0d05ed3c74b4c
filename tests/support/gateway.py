"""A real gateway (uvicorn, real HTTP) inside the test process, for HTTP integration tests.

It talks to the real embedded broker; settings are passed in, so each test chooses its
own limits, keys and topic prefix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewaySettings
from tests.support.gateway_settings import gateway_settings
from tests.support.wait import eventually


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[str]:
    """Yields the base URL once the gateway answers and is connected to the broker."""
    # As `consentry gateway` serves it (uvicorn's own proxy headers off: see server_options).
    config = uvicorn.Config(create_app(settings), **{**server_options(settings), "host": "127.0.0.1"}, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"gateway-{settings.gateway_port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        import httpx

        def ready() -> bool:
            assert thread.is_alive(), "the gateway thread died"
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout=30, what="gateway ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)

StartGateway = Callable[..., tuple[str, GatewaySettings]]


@pytest.fixture
def start_gateway(broker: tuple[str, str], tmp_path: Path) -> Iterator[StartGateway]:
    """start_gateway(**settings) -> (base URL, settings); every gateway stops after the test.
    Test modules import this fixture by name."""
    contexts = []

    def start(**overrides: Any) -> tuple[str, GatewaySettings]:
        settings = gateway_settings(broker, tmp_path, **overrides)
        context = running_gateway(settings)
        url = context.__enter__()
        contexts.append(context)
        return url, settings

    yield start
    for context in reversed(contexts):
        context.__exit__(None, None, None)
