"""`consentry token USER [--admin] [--scope ...]` signs with the key set of the token's purpose
(the newest key, named in `kid`), for this service's audience; never with the development
secret beyond loopback."""

from __future__ import annotations

import jwt
from typer.testing import CliRunner

from consentry_cli.cli import app
from services.gateway.auth import ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE, TokenVerifier
from tests.support.gateway_settings import ADMIN_KEYS, KEY_SETTINGS, USER_KEYS

ENV = {f"CONSENTRY_{name.upper()}": value for name, value in KEY_SETTINGS.items()}


def token(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["token", *args], env={**ENV, **env})
    return result.exit_code, result.stdout.strip() if result.exit_code == 0 else result.output


def test_a_persons_token_is_signed_with_the_people_keys_and_an_operators_with_the_operators_keys() -> None:
    verifier = TokenVerifier(USER_KEYS, admin_keys=ADMIN_KEYS)
    code, person = token("alice")
    assert code == 0 and jwt.get_unverified_header(person)["kid"] == USER_KEYS.signing.kid
    assert verifier.verify(person).user_id == "alice" and not verifier.verify(person).scopes
    code, operator = token("ops-1", "--admin", "--scope", IMPORT_WITHDRAWALS_SCOPE)
    assert code == 0 and jwt.get_unverified_header(operator)["kid"] == ADMIN_KEYS.signing.kid
    assert verifier.verify(operator).scopes == {ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE}
    assert jwt.decode(operator, options={"verify_signature": False})["aud"] == "consentry"


def test_bad_requests_are_refused_with_a_message() -> None:
    assert token("alice", "--scope", IMPORT_WITHDRAWALS_SCOPE)[0] == 2  # scopes are for operators
    assert token("ops", "--admin", "--scope", "admin")[0] == 2  # not a scope of this service
    assert token("Jose\u0301")[0] == 2  # not a canonical user id
    code, output = token("alice", GATEWAY_HOST="0.0.0.0", CONSENTRY_USER_KEYS="")
    assert code == 2 and "CONSENTRY_USER_KEYS" in output
