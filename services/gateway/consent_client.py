"""Reads a user's consent state from the consent service (which routes to the owning worker)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


class ConsentUnavailable(Exception):
    pass


class ConsentClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def state(self, user_id: str) -> dict[str, Any]:
        try:
            response = await self._client.get(f"/v1/users/{quote(user_id, safe='')}")
        except httpx.HTTPError as exc:
            raise ConsentUnavailable(f"consent service unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise ConsentUnavailable(f"consent service answered {response.status_code}")
        return response.json()
