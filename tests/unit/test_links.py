"""One-click link tokens: signed, expiring, for one user and one purpose only."""

import jwt
import pytest

from consentry.keys import KeySet
from consentry.links import DEFAULT_TTL_SECONDS, InvalidLink, make_link_token, objection_link, verify_link_token
from services.gateway.auth import InvalidToken, TokenVerifier, make_token, verify_token

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
NOW = 1_750_000_000


def test_a_link_names_its_user_and_channel_and_expires_after_30_days_by_default() -> None:
    claims = verify_link_token(SECRET, make_link_token(SECRET, "u-42", channel="app", now=NOW), now=NOW + 1)
    assert (claims.user_id, claims.channel) == ("u-42", "app")
    assert claims.expires_at == NOW + DEFAULT_TTL_SECONDS == NOW + 30 * 24 * 3600


def test_an_expired_link_is_refused_as_expired() -> None:
    token = make_link_token(SECRET, "u-42", ttl_seconds=60, now=NOW)
    verify_link_token(SECRET, token, now=NOW + 59)
    with pytest.raises(InvalidLink) as refused:
        verify_link_token(SECRET, token, now=NOW + 60)
    assert refused.value.expired


def test_a_link_signed_with_another_secret_or_altered_is_refused() -> None:
    token = make_link_token(SECRET, "u-42", now=NOW)
    with pytest.raises(InvalidLink) as other_key:
        verify_link_token("another-secret-that-is-also-long-enough", token, now=NOW)
    assert not other_key.value.expired
    header, payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"u-42"', b'"u-43"')
    ).decode()
    with pytest.raises(InvalidLink):
        verify_link_token(SECRET, f"{header}.{forged_payload}.{signature}", now=NOW)


def test_a_bearer_token_is_not_a_link_and_a_link_is_not_a_bearer_token() -> None:
    bearer = make_token(SECRET, "u-42", now=NOW)
    link = make_link_token(SECRET, "u-42")
    with pytest.raises(InvalidLink):
        verify_link_token(SECRET, bearer)
    with pytest.raises(InvalidToken):
        verify_token(SECRET, link)
    with pytest.raises(InvalidToken):
        TokenVerifier(SECRET).verify(link)
    with pytest.raises(InvalidToken):  # not even where the same secret verifies operators' tokens
        TokenVerifier(None, admin_keys=SECRET).verify(link)


def test_a_link_names_the_key_that_signed_it_and_every_key_of_the_set_verifies_its_own() -> None:
    old = KeySet.parse("l-2025-06:an-old-link-secret-that-is-long-enough", "CONSENTRY_LINK_KEYS")
    both = KeySet.parse("l-2025-06:an-old-link-secret-that-is-long-enough,l-2025-12:a-new-link-secret-that-is-long-enough", "CONSENTRY_LINK_KEYS")
    sent_before = make_link_token(old, "u-42", now=NOW)
    sent_after = make_link_token(both, "u-43", now=NOW)
    assert verify_link_token(both, sent_before, now=NOW + 1).key_id == "l-2025-06"
    assert verify_link_token(both, sent_after, now=NOW + 1).key_id == "l-2025-12"
    with pytest.raises(InvalidLink):
        verify_link_token(old, sent_after, now=NOW + 1)


def test_a_token_with_the_link_audience_but_another_purpose_is_refused() -> None:
    token = jwt.encode({"sub": "u-42", "aud": "consentry:object-link", "purpose": "admin", "channel": "email", "jti": "x", "exp": NOW + 60}, SECRET)
    with pytest.raises(InvalidLink):
        verify_link_token(SECRET, token, now=NOW)


def test_links_are_only_made_for_a_real_user_id_and_a_known_channel() -> None:
    for bad in ("", "x" * 257, "nul\x00"):
        with pytest.raises(ValueError):
            make_link_token(SECRET, bad)
    with pytest.raises(ValueError):
        make_link_token(SECRET, "u-42", channel="sms")


def test_the_url_carries_the_token_url_encoded() -> None:
    url = objection_link(SECRET, "https://consent.example.org/", "u 42")
    assert url.startswith("https://consent.example.org/object?token=")
    token = url.split("token=", 1)[1]
    assert verify_link_token(SECRET, token).user_id == "u 42"
    assert [verify_link_token(SECRET, make_link_token(SECRET, "u")).link_id for _ in range(2)][0] != verify_link_token(SECRET, token).link_id
