"""Reads a user's consent state from the consent service (which routes to the owning worker)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from consentry.domain.model import ConsentState
from consentry.wire import decode_consent_state


class ConsentUnavailable(Exception):
    pass


class ConsentClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout)

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
        if response.status_code != 200:
            raise ConsentUnavailable(f"consent service answered {response.status_code}")
        try:
            return decode_consent_state(response.content)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConsentUnavailable(f"consent service sent a malformed row ({type(exc).__name__})") from exc
