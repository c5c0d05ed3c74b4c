"""Bearer tokens: who is calling, and what they may do."""

from __future__ import annotations

import warnings

import jwt
import pytest

from services.gateway.auth import InvalidToken, make_token, verify_token

SECRET = "a-test-secret-long-enough-for-hs256-0123456789"


def _hs512_token() -> str:
    """A token signed with the right secret but an algorithm the gateway does not accept
    (PyJWT warns that the secret is short for HS512: irrelevant, it must be refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode({"sub": "u-42", "exp": 2**40}, SECRET, algorithm="HS512")


def test_a_token_names_its_user_and_scope() -> None:
    assert verify_token(SECRET, make_token(SECRET, "u-42")).user_id == "u-42"
    assert not verify_token(SECRET, make_token(SECRET, "u-42")).is_admin
    assert verify_token(SECRET, make_token(SECRET, "ops", admin=True)).is_admin


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (make_token("another-secret-also-long-enough-0123456789", "u-42"), "invalid token"),
        (make_token(SECRET, "u-42", ttl_seconds=-10), "token expired"),
        (jwt.encode({"sub": "u-42"}, SECRET, algorithm="HS256"), "invalid token"),  # no expiry
        (_hs512_token(), "invalid token"),
        (jwt.encode({"sub": "", "exp": 2**40}, SECRET, algorithm="HS256"), "token subject is not a user id"),
        ("not-a-jwt", "invalid token"),
    ],
)
def test_bad_tokens_are_refused(token: str, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        verify_token(SECRET, token)


def test_a_verified_token_is_remembered_only_until_it_expires() -> None:
    from services.gateway.auth import TokenVerifier
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
