"""Bearer tokens: HS256 JWTs whose `sub` is the user_id; operators carry the `admin` scope."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ADMIN_SCOPE = "admin"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    user_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def make_token(secret: str, user_id: str, *, admin: bool = False, ttl_seconds: int = 24 * 3600, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}
    if admin:
        claims["scope"] = ADMIN_SCOPE
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("invalid token") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256 or "\x00" in sub:
        raise InvalidToken("token subject is not a user id")
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else ())
    return Principal(sub, scopes)
