"""Settings for a gateway under test: unique topics and port, a real broker, no consent
service unless the test starts one."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from consentry.kafka import ensure_topics
from services.gateway.settings import GatewaySettings
from tests.support.ports import free_port

SECRET = "gateway-test-secret-" + uuid.uuid4().hex


def gateway_settings(broker: tuple[str, str], data_dir: Path, **overrides: Any) -> GatewaySettings:
    bootstrap, flavor = broker
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "broker_flavor": flavor,
        "topic_prefix": f"g{uuid.uuid4().hex[:10]}-",
        "partitions": 2,
        "gateway_port": free_port(),
        "jwt_secret": SECRET,
        "consent_url": f"http://127.0.0.1:{free_port()}",  # nobody listens: status is "unavailable"
        "data_dir": data_dir,
        **overrides,
    }
    settings = GatewaySettings(**values)
    objections = [s for s in settings.topics.specs() if s.name == settings.topics.objections]
    asyncio.run(ensure_topics(settings, objections))
    return settings
