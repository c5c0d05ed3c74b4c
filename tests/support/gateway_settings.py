"""Settings for a gateway under test: unique topics and port, a real broker, no consent
service unless the test starts one, and keys as an operator sets them (docs/operations.md,
"Keys and rotation"): one key set per purpose, distinct secrets, the default audience."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from consentry.keys import KeySet
from consentry.kafka import ensure_topics
from consentry.links import make_link_token
from services.gateway.auth import make_token
from services.gateway.settings import GatewaySettings
from tests.support.ports import free_port

USER_KEYS = KeySet.parse(f"test-user-1:people-{uuid.uuid4().hex}", "CONSENTRY_USER_KEYS")
ADMIN_KEYS = KeySet.parse(f"test-admin-1:operators-{uuid.uuid4().hex}", "CONSENTRY_ADMIN_KEYS")
LINK_KEYS = KeySet.parse(f"test-link-1:links-{uuid.uuid4().hex}", "CONSENTRY_LINK_KEYS")
KEY_SETTINGS = {
    "user_keys": f"{USER_KEYS.signing.kid}:{USER_KEYS.signing.secret}",
    "admin_keys": f"{ADMIN_KEYS.signing.kid}:{ADMIN_KEYS.signing.secret}",
    "link_keys": f"{LINK_KEYS.signing.kid}:{LINK_KEYS.signing.secret}",
}


def user_token(user: str, **options: Any) -> str:
    """A person's bearer token, as the platform signs it."""
    return make_token(USER_KEYS, user, **options)


def admin_token(user: str = "operator", *scopes: str, **options: Any) -> str:
    """An operator's token: `consentry:admin` and any other `scopes`."""
    return make_token(ADMIN_KEYS, user, admin=True, scopes=scopes, **options)


def link_token(user: str, **options: Any) -> str:
    """A one-click link's token, as the notice sender signs it."""
    return make_link_token(LINK_KEYS, user, **options)


def gateway_settings(broker: tuple[str, str], data_dir: Path, **overrides: Any) -> GatewaySettings:
    bootstrap, flavor = broker
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "broker_flavor": flavor,
        "topic_prefix": f"g{uuid.uuid4().hex[:10]}-",
        "partitions": 2,
        "gateway_port": free_port(),
        **KEY_SETTINGS,
        "consent_url": f"http://127.0.0.1:{free_port()}",  # nobody listens: status is "unavailable"
        "data_dir": data_dir,
        **overrides,
    }
    settings = GatewaySettings(**values)
    topics = settings.topics
    needed = [s for s in topics.specs() if s.name in (topics.objections, topics.admin_actions)]
    asyncio.run(ensure_topics(settings, needed))
    return settings
