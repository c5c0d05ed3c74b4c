"""Consent web views: a user's state (routed to the worker that owns it), health, metrics.

A user is named in the query, `/v1/user/status?user_id=…` and `/v1/user/state?user_id=…`,
so that every canonical id reaches the view (see `requested_user`).

A user's state answers only a caller presenting the service token (CONSENTRY_SERVICE_TOKEN,
`Authorization: Bearer`): the gateway, and the consent workers routing a look-up to the owner
(faust forwards the request's headers). Without a token the views are open only on loopback
(services.consent.app refuses to listen beyond it). faust's own table and router views are off.
"""

from __future__ import annotations

import hmac
import logging

import faust
import orjson
from aiohttp import web
from faust.exceptions import SameNode
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from consentry.web import is_loopback
from consentry import patches
from consentry.domain.consent import user_status
from consentry.domain.model import identifier_problem
from consentry.partitioning import home_partition
from consentry.wire import decode_consent_state, status_to_dict
from consentry.timeutil import now_us
from services.consent.monitoring import refresh_lag
from services.consent.settings import ConsentSettings


log = logging.getLogger(__name__)


class InsecureConfiguration(Exception):
    """The consent service must not start with these settings; the message says what to set."""


MIN_TOKEN_LENGTH = 32


def check_service_token(settings: ConsentSettings) -> None:
    token = settings.service_token
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InsecureConfiguration(f"CONSENTRY_SERVICE_TOKEN is {len(token)} characters long; at least {MIN_TOKEN_LENGTH} are required")
    if token is None and not is_loopback(settings.consent_host):
        raise InsecureConfiguration(
            f"the consent web views would listen on {settings.consent_host}, beyond loopback, and CONSENTRY_SERVICE_TOKEN is not "
            "set: anyone reaching the port could read any person's objections. Set CONSENTRY_SERVICE_TOKEN (the same value "
            "on the gateway; for example the output of `openssl rand -hex 32`), or listen on 127.0.0.1 (CONSENTRY_CONSENT_HOST)."
        )


def register_views(app: faust.App, table: faust.Table, settings: ConsentSettings) -> None:
    sources = {settings.topics.objections, settings.topics.receipts, settings.topics.notices}
    expected = f"Bearer {settings.service_token}".encode() if settings.service_token else None

    def refused(self: View, request: Request) -> Response | None:
        """401 unless the caller presents the service token (when one is configured)."""
        if expected is None:
            return None
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        log.warning("refused a user look-up without the service token (%s)", "a wrong token" if given else "no token")
        return self.json({"detail": "this view answers the gateway only (CONSENTRY_SERVICE_TOKEN)"}, status=401)

    def recovering() -> bool:
        return bool(app.rebalancing) or not patches.table_recovery_completed(app)

    class Answered(Exception):
        """A look-up answered without this worker's row: recovering, or routed to its owner."""

        def __init__(self, response: Response) -> None:
            self.response = response

    async def own_row(self: View, request: Request, user_id: str) -> bytes | None:
        """The user's raw row when this worker owns it (None: no row). Raises Answered with the
        response to send when the row is not here to read."""
        if recovering():
            raise Answered(self.json({"detail": "consent state is being recovered; retry shortly"}, status=503))
        key = user_id.encode()  # canonical (requested_user), so it has a UTF-8 form
        try:
            raise Answered(await app.router.route_req(table.name, key, self.web, request))
        except SameNode:
            # "No row" only from the worker that applies the user's events (objections[home]):
            # any other worker's table is not the truth, so it answers 503, never "no row".
            if not app.assignor.is_active(TP(settings.topics.objections, home_partition(user_id, settings.partitions))):
                raise Answered(self.json({"detail": "this worker does not own the user's partition; retry shortly"}, status=503))
            return table.get(key)
        except Answered:
            raise
        except Exception as exc:
            raise Answered(self.json({"detail": "the worker owning this user is unreachable"}, status=503)) from exc

    def requested_user(self: View, request: Request) -> str:
        """The `user_id` query parameter: any canonical id, whatever it holds (`/`, `{`, `.`,
        `..`, `?`, `#`, spaces), which a path segment could not carry. Raises Answered (400)
        otherwise: an id that is not canonical has no row, and saying "none" would be a guess."""
        values = request.query.getall("user_id", [])
        if len(values) != 1:
            raise Answered(self.json({"detail": "give exactly one user_id query parameter"}, status=400))
        problem = identifier_problem(values[0])
        if problem is not None:
            raise Answered(self.json({"detail": f"user_id {problem}"}, status=400))
        return values[0]

    # The id travels in the query (?user_id=…, percent-encoded), never in the path: aiohttp's
    # path parameters stop at `/` and refuse `{`/`}`, and clients remove `.` and `..` segments.
    @app.page("/v1/user/status")
    async def user_status_view(self: View, request: Request) -> Response:
        """The person's status document, as `GET /v1/objections/me` shows it."""
        if (refusal := refused(self, request)) is not None:
            return refusal
        try:
            user_id = requested_user(self, request)
            raw = await own_row(self, request, user_id)
        except Answered as answered:
            return answered.response
        state = decode_consent_state(raw) if raw is not None else None
        return self.json(status_to_dict(user_status(user_id, state, now_us())))

    @app.page("/v1/user/state")
    async def user_row(self: View, request: Request) -> Response:
        """`{"user_id": …, "row": …}`: the user's row as the changelog records it (what the
        gateway merges with the events it acknowledged), `"row": null` when there is none.
        Always `200` with the id it answers for: any other answer (a 404 from a route that did
        not match, another service on the port) is not "no row" to the gateway."""
        if (refusal := refused(self, request)) is not None:
            return refusal
        try:
            user_id = requested_user(self, request)
            raw = await own_row(self, request, user_id)
        except Answered as answered:
            return answered.response
        body = b'{"user_id":' + orjson.dumps(user_id) + b',"row":' + (raw if raw is not None else b"null") + b"}"
        return self.bytes(body, content_type="application/json")

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        if recovering():
            return self.json({"ready": False, "detail": "recovering the consent table"}, status=503)
        return self.json({"ready": True, "detail": "consent table recovered"})

    @app.page("/metrics")
    async def prometheus(self: View, request: Request) -> Response:
        refresh_lag(app, sources)
        # aiohttp refuses a charset inside content_type=, so set the header directly.
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
