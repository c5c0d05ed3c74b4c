"""Bearer tokens: JWTs whose `sub` is the user_id; operators carry the `admin` scope.

HS256 with CONSENTRY_JWT_SECRET by default. Platforms with their own identity provider set
CONSENTRY_JWKS_URL or CONSENTRY_JWKS_FILE: RS256 tokens are then checked against those
public keys (PyJWT's PyJWKClient / PyJWKSet; no crypto of our own). The algorithm is chosen
by the key source, never by the token alone, so an RS256 public key can never be used as an
HS256 secret. One-click link tokens (consentry.links) are refused here: they carry an
audience and a purpose that bearer tokens never have.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import jwt

if TYPE_CHECKING:
    from services.gateway.settings import GatewaySettings

ALGORITHM = "HS256"
ASYMMETRIC_ALGORITHMS = ("RS256",)
ADMIN_SCOPE = "admin"

log = logging.getLogger(__name__)


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    user_id: str
    scopes: frozenset[str]
    expires_at: float = float("inf")  # the token's `exp`

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def make_token(secret: str, user_id: str, *, admin: bool = False, ttl_seconds: int = 24 * 3600, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}
    if admin:
        claims["scope"] = ADMIN_SCOPE
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def principal_from_claims(claims: dict[str, object]) -> Principal:
    if "purpose" in claims:
        raise InvalidToken("this token is a one-click link, not an API token")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256 or "\x00" in sub:
        raise InvalidToken("token subject is not a user id")
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else ())
    exp = claims.get("exp")
    return Principal(sub, scopes, float(exp) if isinstance(exp, int | float) else float("inf"))


def verify_token(secret: str, token: str) -> Principal:
    """An HS256 bearer token signed with `secret`."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("invalid token") from exc
    return principal_from_claims(claims)


class SigningKeys(Protocol):
    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK: ...


class JWKSFile:
    """Public keys from a JWKS file on disk, re-read when it changes (key rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._keys = self._load()

    def _load(self) -> jwt.PyJWKSet:
        mtime = os.stat(self.path).st_mtime
        keys = jwt.PyJWKSet.from_json(self.path.read_text())
        self._mtime = mtime
        return keys

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        with self._lock:
            try:
                if os.stat(self.path).st_mtime != self._mtime:
                    self._keys = self._load()
            except (OSError, jwt.PyJWKSetError) as exc:
                log.error("cannot re-read the JWKS file %s (%s); keeping the keys loaded before", self.path, type(exc).__name__)
            keys = self._keys
        signing = [k for k in keys.keys if k.public_key_use in (None, "sig")]
        if kid is None and len(signing) == 1:
            return signing[0]
        for key in signing:
            if key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"no signing key with kid {kid!r} in the JWKS file")


VERIFIED_CACHE_SIZE = 100_000


class TokenVerifier:
    """Checks bearer tokens: HS256 with the shared secret, RS256 with the JWKS keys."""

    def __init__(
        self,
        secret: str | None,
        keys: SigningKeys | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.secret = secret
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        # Tokens already verified, until their `exp`: a person's client repeats its token
        # (filing, then polling the status), and checking a signature is most of a request's
        # work after the framework's. A cached entry never outlives the token's expiry.
        self._verified: dict[str, Principal] = {}

    def verify(self, token: str) -> Principal:
        principal = self._verified.get(token)
        if principal is not None:
            if principal.expires_at > time.time():
                return principal
            self._verified.pop(token, None)
        principal = self._verify_signed(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # simple bound; refilled by the next requests
        self._verified[token] = principal
        return principal

    def _verify_signed(self, token: str) -> Principal:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid token") from exc
        if alg == ALGORITHM and self.secret is not None:
            return verify_token(self.secret, token)
        if alg in ASYMMETRIC_ALGORITHMS and self.keys is not None:
            return self._verify_asymmetric(token, alg)
        raise InvalidToken("invalid token (unsupported signing algorithm)")

    def _verify_asymmetric(self, token: str, alg: str) -> Principal:
        try:
            key = self.keys.get_signing_key_from_jwt(token)  # type: ignore[union-attr]
        except jwt.PyJWKClientConnectionError as exc:
            log.error("identity provider keys unreachable: %s", type(exc).__name__)
            raise InvalidToken("cannot check the token right now (identity provider keys unavailable)") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise InvalidToken("invalid token (unknown signing key)") from exc
        required = ["sub", "exp"] + (["aud"] if self.audience else []) + (["iss"] if self.issuer else [])
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer, options={"require": required}
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise InvalidToken("invalid token (not issued for this service)") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid token") from exc
        return principal_from_claims(claims)


def verifier_for(settings: GatewaySettings) -> TokenVerifier:
    """With a JWKS, HS256 stays accepted only when a real secret is configured: the
    development secret is public, so it must never open an identity-provider deployment."""
    keys: SigningKeys | None = None
    if settings.jwks_url:
        keys = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)
    elif settings.jwks_file is not None:
        keys = JWKSFile(settings.jwks_file)
    if keys is not None and not settings.jwt_audience:
        log.warning("CONSENTRY_JWT_AUDIENCE is not set: identity-provider tokens that name an audience will be refused")
    secret = None if keys is not None and settings.insecure_secret else settings.jwt_secret
    return TokenVerifier(secret, keys, audience=settings.jwt_audience, issuer=settings.jwt_issuer)
