"""One-click objection links: signed, expiring, single-purpose tokens for `/object?token=…`.

A link token is an HS256 JWT signed with the newest key of the link key set
(`CONSENTRY_LINK_KEYS`, consentry.keys), its id in the `kid` header, whose audience and
`purpose` say "object link": it can file (and show) an objection for its `sub` and nothing
else. Every key of the set verifies the links that name it, so links sent before a rotation
keep working until they expire. The link keys verify nothing else: API tokens are checked
with keys of their own and carry another audience, so each kind is refused where the other
is expected, and the notice sender, which holds the link keys, cannot mint an API token.

The notice sender calls `objection_link(KeySet.parse(os.environ["CONSENTRY_LINK_KEYS"],
"CONSENTRY_LINK_KEYS"), base_url, user_id)`; `consentry link USER` prints one.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt

from consentry.domain.model import Channel, identifier_problem
from consentry.keys import KeySet, key_set

ALGORITHM = "HS256"
LINK_AUDIENCE = "consentry:object-link"
LINK_PURPOSE = "object"
# Where a one-click link is sent from: a notice e-mail, an in-app notice (`app`: the objection
# channel, not the notice channel `in_app`), or the web.
LINK_CHANNELS = frozenset({Channel.EMAIL, Channel.APP, Channel.WEB})
DEFAULT_TTL_SECONDS = 30 * 24 * 3600


class InvalidLink(Exception):
    """The link cannot be used; `expired` tells the two cases apart for the page."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class LinkClaims:
    user_id: str
    channel: str  # recorded on the objection: email (notice e-mail), app (in-app notice), web
    link_id: str
    expires_at: int  # seconds since the epoch
    key_id: str  # the link key that signed it (the CSRF key of its page derives from that key)


def make_link_token(
    keys: str | KeySet, user_id: str, *, channel: str = Channel.EMAIL, ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None
) -> str:
    problem = identifier_problem(user_id) if type(user_id) is str else "is not a string"
    if problem is not None:
        raise ValueError(f"user_id {problem}")
    if channel not in LINK_CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(sorted(LINK_CHANNELS))}")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user_id,
        "aud": LINK_AUDIENCE,
        "purpose": LINK_PURPOSE,
        "channel": channel,
        "jti": secrets.token_urlsafe(12),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return key_set(keys, "the link key").sign(claims)


def verify_link_token(keys: str | KeySet, token: str, now: float | None = None) -> LinkClaims:
    """The link's claims, checked with the key its `kid` names. A plain secret is a set of
    one key (links made before key ids existed carry none)."""
    if not token or len(token) > 4096:
        raise InvalidLink("this link is incomplete")
    keys = key_set(keys, "the link key")
    try:
        key = keys.key_for(token)
        claims = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            audience=LINK_AUDIENCE,
            # `now` (tests, tools) replaces the clock: then the expiry is checked below.
            options={"require": ["sub", "exp", "aud", "jti"], "verify_exp": now is None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidLink("this link has expired", expired=True) from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidLink("this link is not valid") from exc
    if now is not None and (type(claims["exp"]) is not int or claims["exp"] <= now):
        raise InvalidLink("this link has expired", expired=True)
    sub, channel, jti = claims.get("sub"), claims.get("channel"), claims.get("jti")
    if claims.get("purpose") != LINK_PURPOSE or channel not in LINK_CHANNELS:
        raise InvalidLink("this link is not valid")
    if type(sub) is not str or identifier_problem(sub) is not None or type(jti) is not str or identifier_problem(jti) is not None:
        # jti keys the page's CSRF binding (hashed as UTF-8): text only, like an id.
        raise InvalidLink("this link is not valid")
    return LinkClaims(user_id=sub, channel=channel, link_id=jti, expires_at=int(claims["exp"]), key_id=key.kid)


def objection_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/object?{urlencode({'token': token})}"


def objection_link(
    keys: str | KeySet, base_url: str, user_id: str, *, channel: str = Channel.EMAIL, ttl_seconds: int = DEFAULT_TTL_SECONDS
) -> str:
    """The URL a notice (e-mail or in-app) carries: one click to the objection page."""
    return objection_url(base_url, make_link_token(keys, user_id, channel=channel, ttl_seconds=ttl_seconds))
