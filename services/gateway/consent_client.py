"""Reads a user's consent state from the consent service (which routes to the owning worker)."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

from consentry.domain.model import ConsentState
from consentry.wire import decode_consent_state


log = logging.getLogger(__name__)


class ConsentUnavailable(Exception):
    pass


class ConsentClient:
    """`service_token` (CONSENTRY_SERVICE_TOKEN) goes with every look-up: the consent service
    answers user look-ups only to the gateway."""

    def __init__(self, base_url: str, timeout: float = 5.0, service_token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {service_token}"} if service_token else None
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self._client.aclose()

    async def state(self, user_id: str) -> ConsentState | None:
        """The user's row in the consent table (None: no row), as the changelog records it."""
        try:
            response = await self._client.get(f"/v1/users/{quote(user_id, safe='')}/state")
        except httpx.HTTPError as exc:
            raise ConsentUnavailable(f"consent service unreachable ({type(exc).__name__})") from exc
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            # Not the person's fault: the two services disagree on the token (an operator's error).
            log.error("the consent service answered %d to a look-up: CONSENTRY_SERVICE_TOKEN differs between gateway and consent", response.status_code)
            raise ConsentUnavailable("consent service refused the gateway's CONSENTRY_SERVICE_TOKEN")
        if response.status_code != 200:
            raise ConsentUnavailable(f"consent service answered {response.status_code}")
        try:
            return decode_consent_state(response.content)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConsentUnavailable(f"consent service sent a malformed row ({type(exc).__name__})") from exc
