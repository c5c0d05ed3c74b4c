"""`consentry link USER` prints a link that opens the objection page for that user, signed
with the newest link key; a link signed with the previous key keeps working after a rotation."""

from __future__ import annotations

import re
import uuid

import httpx
import jwt
from typer.testing import CliRunner

from consentry.keys import KeySet
from consentry.links import make_link_token, verify_link_token
from consentry_cli.cli import app
from tests.support.consent_stub import empty_consent_service
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import KEY_SETTINGS, LINK_KEYS

OLD, NEW = f"links-2025-06:{uuid.uuid4().hex}{uuid.uuid4().hex}", f"links-2025-12:{uuid.uuid4().hex}{uuid.uuid4().hex}"


def test_the_printed_link_opens_the_page_for_that_user(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    result = CliRunner().invoke(
        app, ["link", "lea", "--channel", "app", "--ttl-days", "2"], env={"CONSENTRY_LINK_KEYS": KEY_SETTINGS["link_keys"], "CONSENTRY_PUBLIC_URL": url}
    )
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith(f"{url}/object?token=")
    claims = verify_link_token(LINK_KEYS, link.split("token=", 1)[1])
    assert (claims.user_id, claims.channel) == ("lea", "app")
    page = httpx.get(link)
    assert page.status_code == 200 and ">lea<" in page.text


def test_after_a_rotation_new_links_carry_the_new_key_and_old_links_still_work(start_gateway: StartGateway) -> None:
    """docs/operations.md's worked rotation: add the new key at the end; links already sent
    (signed with the old one) keep working until they expire; remove the old key after that."""
    old_link = make_link_token(KeySet.parse(OLD, "CONSENTRY_LINK_KEYS"), "lea")
    with empty_consent_service() as consent_url:
        url, _settings = start_gateway(link_keys=f"{OLD},{NEW}", consent_url=consent_url)
        check_both_links(url, old_link)

    # Once the old links have expired, the old key goes: what it signed opens nothing.
    later, _ = start_gateway(link_keys=NEW)
    assert httpx.get(f"{later}/object", params={"token": old_link}).status_code == 400


def check_both_links(url: str, old_link: str) -> None:
    result = CliRunner().invoke(app, ["link", "lea"], env={"CONSENTRY_LINK_KEYS": f"{OLD},{NEW}", "CONSENTRY_PUBLIC_URL": url})
    assert result.exit_code == 0, result.output
    new_link = result.stdout.strip()
    assert jwt.get_unverified_header(new_link.split("token=", 1)[1])["kid"] == "links-2025-12"

    with httpx.Client() as client:
        for link in (new_link, f"{url}/object?token={old_link}"):
            page = client.get(link)
            assert page.status_code == 200, page.text
            form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
            receipt = client.post(f"{url}/object", data=form)  # the CSRF key derives from the link's own key
            assert receipt.status_code == 200 and "objection" in receipt.text.lower(), receipt.text


def test_an_unknown_channel_is_refused_with_a_message() -> None:
    result = CliRunner().invoke(app, ["link", "lea", "--channel", "sms"], env={"CONSENTRY_LINK_KEYS": KEY_SETTINGS["link_keys"]})
    assert result.exit_code == 2
    assert "channel must be one of app, email, web" in result.output


def test_links_are_never_signed_with_the_development_secret_beyond_loopback() -> None:
    result = CliRunner().invoke(app, ["link", "lea"], env={"GATEWAY_HOST": "0.0.0.0"})
    assert result.exit_code == 2 and "CONSENTRY_LINK_KEYS" in result.output
