"""`consentry link USER` prints a link that opens the objection page for that user."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from consentry.links import verify_link_token
from consentry_cli.cli import app
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import SECRET


def test_the_printed_link_opens_the_page_for_that_user(start_gateway: StartGateway) -> None:
    url, _settings = start_gateway()
    result = CliRunner().invoke(
        app, ["link", "lea", "--channel", "app", "--ttl-days", "2"], env={"CONSENTRY_JWT_SECRET": SECRET, "CONSENTRY_PUBLIC_URL": url}
    )
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith(f"{url}/object?token=")
    claims = verify_link_token(SECRET, link.split("token=", 1)[1])
    assert (claims.user_id, claims.channel) == ("lea", "app")
    page = httpx.get(link)
    assert page.status_code == 200 and ">lea<" in page.text


def test_an_unknown_channel_is_refused_with_a_message() -> None:
    result = CliRunner().invoke(app, ["link", "lea", "--channel", "sms"], env={"CONSENTRY_JWT_SECRET": SECRET})
    assert result.exit_code == 2
    assert "channel must be one of app, email, web" in result.output
