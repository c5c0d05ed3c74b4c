"""The one-click page over real HTTP, as a browser without JavaScript would use it: the
page, its CSRF protection, the receipt, and clear pages for every bad link."""

from __future__ import annotations

import re

import httpx
import orjson

from consentry.links import make_link_token
from tests.support.consent_stub import empty_consent_service
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import USER_KEYS, link_token, user_token
from tests.support.kafka import read_topic


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def open_link(client: httpx.Client, url: str, token: str, language: str = "en") -> httpx.Response:
    return client.get(f"{url}/object", params={"token": token}, headers={"Accept-Language": language})


def test_the_page_explains_in_the_reader_s_language_and_never_leaks_the_link(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    token = link_token("u-42")
    with httpx.Client() as client:
        french = open_link(client, url, token, "fr-FR,fr;q=0.9,en;q=0.5")
        english = open_link(client, url, token, "en-GB")
    assert french.status_code == english.status_code == 200
    assert '<html lang="fr">' in french.text and "Je m’oppose à l’utilisation de mes publications" in french.text
    assert '<html lang="en">' in english.text and "Object to the use of my posts" in english.text
    assert "public posts" in english.text and "u-42" in english.text
    assert english.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src" not in english.headers["Content-Security-Policy"]  # no script at all
    assert "<script" not in english.text
    assert english.headers["Cache-Control"] == "no-store"
    cookie = english.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_a_user_id_is_escaped_on_the_page(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    page = httpx.get(f"{url}/object", params={"token": link_token('<script>alert("x")</script>')})
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text


def test_bad_links_get_a_clear_page_not_a_stack_trace(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    expired = link_token("u-42", ttl_seconds=1, now=1_000_000)
    cases = {
        "": (400, "This link is not valid"),
        "garbage": (400, "This link is not valid"),
        make_link_token("another-secret-of-sufficient-length!!", "u-42"): (400, "This link is not valid"),
        user_token("u-42"): (400, "This link is not valid"),  # an API token is not a link
        make_link_token(USER_KEYS, "u-42"): (400, "This link is not valid"),  # nor is a link signed with a person's key
        expired: (410, "This link has expired"),
    }
    for token, (code, heading) in cases.items():
        for response in (
            httpx.get(f"{url}/object", params={"token": token}),
            httpx.post(f"{url}/object", data={"token": token, "csrf": "x"}),
            httpx.get(f"{url}/object/status", params={"token": token}),
        ):
            assert response.status_code == code, (token[:20], response.request.url.path)
            assert response.headers["content-type"].startswith("text/html")
            assert heading in response.text and "Traceback" not in response.text
    french = httpx.get(f"{url}/object", params={"token": expired}, headers={"Accept-Language": "fr"})
    assert "Ce lien a expiré" in french.text


def test_the_button_files_the_objection_with_the_link_s_channel_and_shows_a_receipt(start_gateway: StartGateway) -> None:
    with empty_consent_service() as consent_url:  # a double click is checked against the consent state
        url, settings = start_gateway(consent_url=consent_url)
        press_the_button_twice(url, settings)


def press_the_button_twice(url: str, settings) -> None:  # type: ignore[no-untyped-def]
    token = link_token("u-42", channel="app")
    with httpx.Client() as client:
        fields = form_fields(open_link(client, url, token).text)
        receipt = client.post(f"{url}/object", data=fields)
        again = client.post(f"{url}/object", data=fields)  # a double click, or "resend the form"
    assert receipt.status_code == 200
    assert "Your objection is recorded" in receipt.text
    objection_id = re.search(r'id="objection-id">([^<]+)<', receipt.text).group(1)  # type: ignore[union-attr]
    assert re.search(r'id="objection-id">([^<]+)<', again.text).group(1) == objection_id  # type: ignore[union-attr]
    status_href = re.search(r'id="status-link" href="([^"]+)"', receipt.text).group(1)  # type: ignore[union-attr]
    assert status_href.startswith("/object/status?token=")

    events = [orjson.loads(r.value) for r in read_topic(settings.bootstrap_servers, settings.topics.objections)]
    assert [(e["objection_id"], e["user_id"], e["kind"], e["channel"]) for e in events] == [(objection_id, "u-42", "object", "app")]


def test_a_form_without_the_page_s_cookie_or_from_another_link_is_refused(start_gateway: StartGateway) -> None:
    url, settings = start_gateway()
    mine, theirs = link_token("victim"), link_token("attacker")
    with httpx.Client() as attacker:
        their_fields = form_fields(open_link(attacker, url, theirs).text)
        # A cross-site form post: the victim's token in it, but no cookie of the page.
        no_cookie = httpx.post(f"{url}/object", data={**their_fields, "token": mine})
        # The attacker's own CSRF token and cookie, replayed with the victim's link.
        other_link = attacker.post(f"{url}/object", data={**their_fields, "token": mine})
    for refused in (no_cookie, other_link):
        assert refused.status_code == 403
        assert "This form could not be sent" in refused.text
    assert read_topic(settings.bootstrap_servers, settings.topics.objections) == []


def test_the_status_page_says_so_when_the_status_is_unavailable(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()  # no consent service
    page = httpx.get(f"{url}/object/status", params={"token": link_token("u-42")})
    assert page.status_code == 503
    assert "cannot be shown right now" in page.text and page.headers["Retry-After"] == "5"


def test_too_many_attempts_get_a_page_with_retry_after(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway(rate_limit_address_per_s=0.1, rate_limit_address_burst=1)
    token = link_token("u-42")
    assert httpx.get(f"{url}/object", params={"token": token}).status_code == 200
    limited = httpx.get(f"{url}/object", params={"token": token}, headers={"Accept-Language": "fr"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "Trop de tentatives" in limited.text
