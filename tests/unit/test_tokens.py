"""Bearer tokens: who is calling, what they may do, and with which key it was signed."""

from __future__ import annotations

import warnings

import jwt
import pytest

from consentry.keys import KeySet
from services.gateway.auth import ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE, InvalidToken, TokenVerifier, make_token, verify_token

SECRET = "a-test-secret-long-enough-for-hs256-0123456789"
PEOPLE = KeySet.parse("p1:people-secret-long-enough-0123456789abcdef", "CONSENTRY_USER_KEYS")
OPERATORS = KeySet.parse("o1:operators-secret-long-enough-0123456789abcdef", "CONSENTRY_ADMIN_KEYS")


def _hs512_token() -> str:
    """A token signed with the right secret but an algorithm the gateway does not accept
    (PyJWT warns that the secret is short for HS512: irrelevant, it must be refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode({"sub": "u-42", "exp": 2**40, "aud": "consentry"}, SECRET, algorithm="HS512")


def test_a_token_names_its_user_and_its_scopes_count_only_when_an_operators_key_signed_it() -> None:
    assert verify_token(SECRET, make_token(SECRET, "u-42")).user_id == "u-42"
    assert not verify_token(SECRET, make_token(SECRET, "u-42"), scoped=True).is_admin
    assert verify_token(SECRET, make_token(SECRET, "ops", admin=True), scoped=True).is_admin
    assert not verify_token(SECRET, make_token(SECRET, "ops", admin=True)).is_admin  # a person's key: scopes ignored
    verifier = TokenVerifier(PEOPLE, admin_keys=OPERATORS)
    assert verifier.verify(make_token(OPERATORS, "ops", admin=True, scopes=(IMPORT_WITHDRAWALS_SCOPE,))).scopes == {ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE}
    assert verifier.verify(make_token(PEOPLE, "mallory", admin=True)).scopes == frozenset()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (make_token("another-secret-also-long-enough-0123456789", "u-42"), "invalid token"),
        (make_token(SECRET, "u-42", ttl_seconds=-10), "token expired"),
        (jwt.encode({"sub": "u-42", "aud": "consentry"}, SECRET, algorithm="HS256"), "invalid token"),  # no expiry
        (jwt.encode({"sub": "u-42", "exp": 2**40}, SECRET, algorithm="HS256"), "not issued for this service"),  # no audience
        (make_token(SECRET, "u-42", audience="another-app"), "not issued for this service"),
        (_hs512_token(), "invalid token"),
        (jwt.encode({"sub": "", "exp": 2**40, "aud": "consentry"}, SECRET, algorithm="HS256"), "token subject is not a canonical user id"),
        (make_token(SECRET, "Jose\u0301"), "not in Unicode NFC"),
        (make_token(SECRET, " alice"), "leading or trailing whitespace"),
        ("not-a-jwt", "invalid token"),
    ],
)
def test_bad_tokens_are_refused(token: str, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        verify_token(SECRET, token)


def test_the_issuer_is_required_when_one_is_configured() -> None:
    with pytest.raises(InvalidToken, match="not issued for this service"):
        verify_token(SECRET, make_token(SECRET, "u-42"), issuer="https://id.example")
    assert verify_token(SECRET, make_token(SECRET, "u-42", issuer="https://id.example"), issuer="https://id.example").user_id == "u-42"


def test_each_token_is_checked_with_the_key_its_kid_names_and_rotation_keeps_old_tokens_valid() -> None:
    old = KeySet.parse("2025-06:old-people-secret-long-enough-0123456789", "CONSENTRY_USER_KEYS")
    rotated = KeySet.parse("2025-06:old-people-secret-long-enough-0123456789,2025-12:new-people-secret-long-enough-0123456789", "CONSENTRY_USER_KEYS")
    issued_before = make_token(old, "u-42")
    issued_after = make_token(rotated, "u-43")
    assert jwt.get_unverified_header(issued_after)["kid"] == "2025-12"  # the newest key signs
    verifier = TokenVerifier(rotated)
    assert verifier.verify(issued_before).user_id == "u-42"
    assert verifier.verify(issued_after).user_id == "u-43"
    with pytest.raises(InvalidToken):  # several keys: a token must say which one
        verifier.verify(jwt.encode({"sub": "u", "exp": 2**40, "aud": "consentry"}, "old-people-secret-long-enough-0123456789"))


def test_a_verified_token_is_remembered_only_until_it_expires() -> None:
    from tests.support.wait import eventually

    verifier = TokenVerifier(SECRET)
    token = make_token(SECRET, "u-42", ttl_seconds=1)
    assert verifier.verify(token).user_id == "u-42"
    assert verifier.verify(token).user_id == "u-42"  # from the cache

    def refused() -> bool:
        try:
            verifier.verify(token)
        except InvalidToken as exc:
            return str(exc) == "token expired"
        return False

    eventually(refused, timeout=5, what="the cached token refused once expired")
    with pytest.raises(InvalidToken):
        verifier.verify(make_token("another-secret-also-long-enough-0123456789", "u-42"))
