"""`/object`: the one-click objection page a notice links to, its receipt and a status page.

Plain HTML forms, no JavaScript. The link token (consentry.links) names the user and the
channel (`email` for notice e-mails, `app` for in-app notices); the form is protected by a
signed double-submit CSRF token bound to that link (services.gateway.pages.csrf).
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Cookie, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from consentry.domain.model import OBJECT
from consentry.keys import KeySet
from consentry.links import InvalidLink, LinkClaims, verify_link_token
from consentry.timeutil import format_rfc3339
from consentry.wire import status_to_dict
from services.gateway import metrics
from services.gateway.consent_client import ConsentUnavailable
from services.gateway.deps import AddressLimit, ConsentDep, KeysDep, PublisherDep, ReceiptsDep, limit_user
from services.gateway.filing import FilingRefused, FilingUnavailable, Superseded, file_event, status_for
from services.gateway.pages import csrf
from services.gateway.pages.rendering import PAGE_HEADERS, TEXTS, display_time, pick_language, render
from services.gateway.problems import INVALID

router = APIRouter(tags=["one-click objection"], dependencies=[AddressLimit])
log = logging.getLogger(__name__)

HTML = {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}


def _html_response(description: str, example: str) -> dict:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}, "example": example}}}


PAGE_RESPONSES = {
    # Not `model=`: on an HTML route FastAPI would file the JSON schema under text/html.
    422: {"description": INVALID["description"], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ValidationProblem"}, **INVALID["content"]["application/json"]}
    }},
    400: _html_response("The link is not valid (incomplete, altered or not a one-click link): a page saying so.", "<h1>This link is not valid</h1>"),
    410: _html_response("The link has expired: a page saying so.", "<h1>This link has expired</h1>"),
    429: {**_html_response("Too many requests: a page asking to wait.", "<h1>Too many attempts</h1>"),
          "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}},
}


def _url(path: str, **params: str) -> str:
    return f"{path}?{urlencode(params)}"


def page(template: str, language: str, status_code: int = 200, extra_headers: dict[str, str] | None = None, **values: object) -> HTMLResponse:
    return HTMLResponse(render(template, language, **values), status_code=status_code, headers={**PAGE_HEADERS, **(extra_headers or {})})


def problem_page(language: str, kind: str, status_code: int, body_key: str | None = None, retry_url: str | None = None) -> HTMLResponse:
    metrics.LINK_PAGES.labels(kind).inc()
    texts = TEXTS[language]
    return page(
        "problem.html", language, status_code,
        heading=texts[f"{kind}_title"], body=texts[body_key or f"{kind}_body"], retry_url=retry_url, switch_url=None,
    )


def rate_limited_page(request: Request, headers: dict[str, str]) -> HTMLResponse:
    language = pick_language(request.headers.get("accept-language"), request.query_params.get("lang"))
    metrics.LINK_PAGES.labels("limited").inc()
    texts = TEXTS[language]
    return page(
        "problem.html", language, 429, headers,
        heading=texts["limited_title"], body=texts["limited_body"], retry_url=None, switch_url=None,
    )


def invalid_link_page(language: str, exc: InvalidLink) -> HTMLResponse:
    log.info("one-click link refused: %s", exc)
    return problem_page(language, "expired", 410) if exc.expired else problem_page(language, "invalid", 400)


def _claims(keys: KeySet, token: str) -> LinkClaims:
    return verify_link_token(keys, token)


def _csrf_key(keys: KeySet, claims: LinkClaims) -> bytes:
    key = keys.get(claims.key_id)
    assert key is not None  # the link was just verified with it
    return csrf.csrf_key(key.secret)


@router.get(
    "/object",
    response_class=HTMLResponse,
    summary="The one-click objection page (what a notice links to)",
    description="A short page, in French or English after `Accept-Language` (or `lang`), explaining what is "
    "used for training, with one button that posts the form to `POST /object`.",
    responses={200: HTML, **PAGE_RESPONSES},
)
async def objection_page(
    request: Request,
    keys: KeysDep,
    token: Annotated[str, Query(description="The signed link token.")] = "",
    lang: Annotated[str | None, Query(description="`en` or `fr`; default from Accept-Language.")] = None,
) -> HTMLResponse:
    language = pick_language(request.headers.get("accept-language"), lang)
    try:
        claims = _claims(keys.link, token)
    except InvalidLink as exc:
        return invalid_link_page(language, exc)
    nonce = csrf.new_nonce()
    response = page(
        "object.html", language,
        token=token,
        csrf=csrf.form_token(_csrf_key(keys.link, claims), claims.link_id, claims.user_id, nonce),
        user_id=claims.user_id,
        expires=display_time(format_rfc3339(claims.expires_at * 1_000_000)),
        switch_url=_url("/object", token=token, lang="fr" if language == "en" else "en"),
    )
    response.set_cookie(
        csrf.COOKIE, nonce, max_age=3600, path="/object", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    metrics.LINK_PAGES.labels("shown").inc()
    return response


@router.post(
    "/object",
    response_class=HTMLResponse,
    summary="File the objection from the one-click page",
    description="Form fields `token`, `csrf` (from the page) and `lang`; needs the page's CSRF cookie. "
    "Answers with a receipt page: the objection id and a link to its status. Sending the same form again "
    "returns the same receipt.",
    responses={
        200: HTML,
        **PAGE_RESPONSES,
        403: _html_response("The form was not sent from the objection page (CSRF check failed).", "<h1>This form could not be sent</h1>"),
        503: _html_response("The objection could not be confirmed; the person is asked to try again.", "<h1>Your objection could not be recorded right now</h1>"),
    },
)
async def file_from_page(
    request: Request,
    keys: KeysDep,
    publisher: PublisherDep,
    receipts: ReceiptsDep,
    consent: ConsentDep,
    token: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form(alias="csrf")] = "",
    lang: Annotated[str, Form()] = "",
    csrf_cookie: Annotated[str | None, Cookie(alias=csrf.COOKIE)] = None,
) -> HTMLResponse:
    language = pick_language(request.headers.get("accept-language"), lang)
    try:
        claims = _claims(keys.link, token)
    except InvalidLink as exc:
        return invalid_link_page(language, exc)
    retry_url = _url("/object", token=token, lang=language)
    nonce = csrf.check(_csrf_key(keys.link, claims), claims.link_id, claims.user_id, csrf_token, csrf_cookie)
    if nonce is None:
        log.warning("one-click form refused: CSRF check failed")
        return problem_page(language, "csrf", 403, retry_url=retry_url)
    limit_user(request, claims.user_id)
    try:
        event = await file_event(OBJECT, claims.user_id, claims.channel, None, None, f"link:{nonce}", publisher, receipts, consent)
    except FilingUnavailable:
        return problem_page(language, "unavailable", 503, retry_url=retry_url)
    except FilingRefused:
        return problem_page(language, "invalid", 400)
    except Superseded:
        # The same form sent again after a later request: show where things stand now.
        return RedirectResponse(_url("/object/status", token=token, lang=language), status_code=303)
    metrics.LINK_PAGES.labels("filed").inc()
    received_at = format_rfc3339(event.received_at_us)
    return page(
        "receipt.html", language,
        user_id=claims.user_id,
        objection_id=event.objection_id,
        received_at=received_at,
        received_at_display=display_time(received_at),
        status_url=_url("/object/status", token=token, lang=language),
        switch_url=None,
    )


@router.get(
    "/object/status",
    response_class=HTMLResponse,
    summary="The status page the receipt links to",
    description="The same history as `GET /v1/objections/me`, for the link's user, as a page.",
    responses={
        200: HTML,
        **PAGE_RESPONSES,
        503: _html_response("The consent state is temporarily unavailable.", "<h1>Status of your objection</h1>"),
    },
)
async def status_page(
    request: Request,
    keys: KeysDep,
    consent: ConsentDep,
    receipts: ReceiptsDep,
    token: Annotated[str, Query(description="The signed link token.")] = "",
    lang: Annotated[str | None, Query(description="`en` or `fr`.")] = None,
) -> HTMLResponse:
    language = pick_language(request.headers.get("accept-language"), lang)
    try:
        claims = _claims(keys.link, token)
    except InvalidLink as exc:
        return invalid_link_page(language, exc)
    refresh_url = _url("/object/status", token=token, lang=language)
    try:
        document = status_to_dict(await status_for(claims.user_id, consent, receipts))
    except ConsentUnavailable:
        texts = TEXTS[language]
        return page(
            "problem.html", language, 503, {"Retry-After": "5"},
            heading=texts["status_title"], body=texts["status_unavailable_body"], retry_url=refresh_url, switch_url=None,
        )
    history = [
        {**item, **{k: display_time(item.get(k)) for k in ("received_at", "enforced_at", "purged_at")}}
        for item in reversed(document["history"])
    ]
    return page(
        "status.html", language,
        user_id=claims.user_id,
        status=document["status"],
        history=history,
        refresh_url=refresh_url,
        switch_url=_url("/object/status", token=token, lang="fr" if language == "en" else "en"),
    )
