"""Reads a user's consent state from the consent service (which routes to the owning worker)."""

from __future__ import annotations

import logging

import httpx
import orjson

from consentry.domain.model import ConsentState
from consentry.wire import consent_state_from_dict


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
        """The user's row in the consent table (None: no row), as the changelog records it.

        "No row" is only ever the consent service's explicit answer for this very user
        (`200 {"user_id": <it>, "row": null}`): a 404 (a route that did not match, an older
        consent service, another service on the port), an answer naming another user or any
        other status raises ConsentUnavailable (fail closed)."""
        try:
            # The id in the query, percent-encoded by httpx: every canonical id, `/`, `{`, `.`, `..` included.
            response = await self._client.get("/v1/user/state", params={"user_id": user_id})
        except httpx.HTTPError as exc:
            raise ConsentUnavailable(f"consent service unreachable ({type(exc).__name__})") from exc
        if response.status_code in (401, 403):
            # Not the person's fault: the two services disagree on the token (an operator's error).
            log.error("the consent service answered %d to a look-up: CONSENTRY_SERVICE_TOKEN differs between gateway and consent", response.status_code)
            raise ConsentUnavailable("consent service refused the gateway's CONSENTRY_SERVICE_TOKEN")
        if response.status_code != 200:
            if response.status_code in (400, 404):
                # Not transient: a consent service of another version, or not the consent service.
                log.error("the consent service answered %d to a look-up of /v1/user/state: is CONSENTRY_CONSENT_URL a consent "
                          "service of this version?", response.status_code)
            raise ConsentUnavailable(f"consent service answered {response.status_code}")
        try:
            answer = orjson.loads(response.content)
            if type(answer) is not dict or "row" not in answer or answer.get("user_id") != user_id:
                raise ValueError("not the look-up's answer for this user")
            if answer["row"] is None:
                return None
            state = consent_state_from_dict(answer["row"])
            if state.user_id != user_id:
                raise ValueError("a row of another user")
            return state
        except (ValueError, KeyError, TypeError) as exc:
            log.error("the consent service sent an answer that is not this user's row (%s)", type(exc).__name__)
            raise ConsentUnavailable(f"consent service sent a malformed answer ({type(exc).__name__})") from exc
