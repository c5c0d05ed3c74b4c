"""CSRF protection of the one-click form: a signed double-submit token bound to the link.

The page sets a random nonce in a SameSite=Strict, HttpOnly cookie and puts
`nonce.signature` in the form, the signature (HMAC-SHA256, stdlib) covering the link's id
and user, with a key derived from the link key that signed the link (so every gateway
replica that accepts the link checks its form, across key rotations). A POST is accepted only when the cookie and the form carry the same nonce and the
signature matches the link it is sent with: a third-party site can neither read the cookie
nor produce a form token for someone else's link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

COOKIE = "consentry_csrf"
_KEY_LABEL = b"consentry one-click csrf v1"


def csrf_key(secret: str) -> bytes:
    """A key of its own, derived from a link key's secret (never the secret itself)."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def _signature(key: bytes, link_id: str, user_id: str, nonce: str) -> str:
    mac = hmac.new(key, f"{link_id}\x00{user_id}\x00{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def form_token(key: bytes, link_id: str, user_id: str, nonce: str) -> str:
    return f"{nonce}.{_signature(key, link_id, user_id, nonce)}"


def check(key: bytes, link_id: str, user_id: str, form_value: str | None, cookie_value: str | None) -> str | None:
    """The nonce when the form token is valid for this link and matches the cookie, else None."""
    if not form_value or not cookie_value or len(form_value) > 200:
        return None
    nonce, _, signature = form_value.partition(".")
    if not nonce or not signature:
        return None
    expected = _signature(key, link_id, user_id, nonce)
    if not hmac.compare_digest(signature, expected) or not hmac.compare_digest(nonce, cookie_value):
        return None
    return nonce
