"""Bearer tokens: JWTs whose `sub` is the user_id; operators carry the `consentry:admin` scope.

HS256 tokens are checked with the key set of their purpose (services.gateway.security):
people's tokens with CONSENTRY_USER_KEYS, operators' with CONSENTRY_ADMIN_KEYS, the key
chosen by the token's `kid` header. Scopes count only in a token an operator's key signed
(or the identity provider): a person's key, even a stolen one, never makes an operator.
Platforms with their own identity provider set CONSENTRY_JWKS_URL or CONSENTRY_JWKS_FILE:
RS256 tokens are then checked against those public keys (PyJWT's PyJWKClient / PyJWKSet;
no crypto of our own). The algorithm is chosen by the key source, never by the token alone,
so an RS256 public key can never be used as an HS256 secret.

Every token must name this service as its audience (`aud`, CONSENTRY_JWT_AUDIENCE) and,
when CONSENTRY_JWT_ISSUER is set (always with an identity provider), its issuer: a token
another application of the same identity provider received is refused here. Scopes are
namespaced (`consentry:admin`, `consentry:import-withdrawals`): a bare `admin` from another
application means nothing. One-click link tokens (consentry.links) are refused: they carry
another audience and a purpose, and are signed with the link keys, which verify nothing here.
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

from consentry.domain.model import identifier_problem
from consentry.keys import KeySet, SigningKey, key_set

if TYPE_CHECKING:
    from services.gateway.security import GatewayKeys
    from services.gateway.settings import GatewaySettings

ALGORITHM = "HS256"
ASYMMETRIC_ALGORITHMS = ("RS256",)
DEFAULT_AUDIENCE = "consentry"
ADMIN_SCOPE = "consentry:admin"
IMPORT_WITHDRAWALS_SCOPE = "consentry:import-withdrawals"  # imported `withdraw` lines (with ADMIN_SCOPE)
SCOPES = (ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE)

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

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def make_token(
    keys: str | KeySet,
    user_id: str,
    *,
    admin: bool = False,
    scopes: tuple[str, ...] = (),
    ttl_seconds: int = 24 * 3600,
    now: float | None = None,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str | None = None,
) -> str:
    """A bearer token signed with the newest key of `keys` (a plain secret: a set of one).
    Sign people's tokens with the user keys and operators' with the admin keys: scopes count
    only in the latter. `admin` adds `consentry:admin`."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds, "aud": audience}
    if issuer:
        claims["iss"] = issuer
    granted = ((ADMIN_SCOPE,) if admin else ()) + tuple(s for s in scopes if s != ADMIN_SCOPE or not admin)
    if granted:
        claims["scope"] = " ".join(granted)
    return key_set(keys, "the token key").sign(claims)


def principal_from_claims(claims: dict[str, object], *, scoped: bool) -> Principal:
    """`scoped`: the token's scopes count (an operator's key or the identity provider signed it)."""
    if "purpose" in claims:
        raise InvalidToken("this token is a one-click link, not an API token")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise InvalidToken("token subject is not a user id")
    problem = identifier_problem(sub)
    if problem is not None:
        # The contract's canonical form ("Identifiers"): never normalised silently.
        raise InvalidToken(f"token subject is not a canonical user id: it {problem}")
    scopes: frozenset[str] = frozenset()
    if scoped:
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else ())
    exp = claims.get("exp")
    return Principal(sub, scopes, float(exp) if isinstance(exp, int | float) else float("inf"))


def _decode_hs256(keys: KeySet, token: str, audience: str, issuer: str | None, key: SigningKey | None = None) -> dict[str, object]:
    """`key`: the key of `keys` the token names, when the caller already read its header."""
    required = ["sub", "exp", "aud"] + (["iss"] if issuer else [])
    try:
        key = key or keys.key_for(token)
        return jwt.decode(token, key.secret, algorithms=[ALGORITHM], audience=audience, issuer=issuer, options={"require": required})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
        raise InvalidToken("invalid token (not issued for this service)") from exc
    except jwt.MissingRequiredClaimError as exc:
        if exc.claim in ("aud", "iss"):
            raise InvalidToken("invalid token (not issued for this service)") from exc
        raise InvalidToken("invalid token") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("invalid token") from exc


def verify_token(
    keys: str | KeySet, token: str, *, scoped: bool = False, audience: str = DEFAULT_AUDIENCE, issuer: str | None = None
) -> Principal:
    """An HS256 bearer token signed with one of `keys`; its scopes count only when `scoped`."""
    return principal_from_claims(_decode_hs256(key_set(keys, "the token key"), token, audience, issuer), scoped=scoped)


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


def _held(keys: KeySet | None, kid: object) -> SigningKey | None:
    """The key of `keys` a token's `kid` names (without one: the set's only key)."""
    if keys is None:
        return None
    if kid is None:
        return keys.keys[0] if len(keys.keys) == 1 else None
    return keys.get(kid) if isinstance(kid, str) else None


class TokenVerifier:
    """Checks bearer tokens: HS256 with the operators' or the people's keys, RS256 with the
    identity provider's JWKS keys."""

    def __init__(
        self,
        user_keys: str | KeySet | None,
        keys: SigningKeys | None = None,
        audience: str = DEFAULT_AUDIENCE,
        issuer: str | None = None,
        admin_keys: str | KeySet | None = None,
    ) -> None:
        self.user_keys = key_set(user_keys, "CONSENTRY_USER_KEYS") if user_keys is not None else None
        self.admin_keys = key_set(admin_keys, "CONSENTRY_ADMIN_KEYS") if admin_keys is not None else None
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
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid token") from exc
        alg = header.get("alg")
        if alg == ALGORITHM and (self.admin_keys is not None or self.user_keys is not None):
            return self._verify_hs256(token, header.get("kid"))
        if alg in ASYMMETRIC_ALGORITHMS and self.keys is not None:
            return self._verify_asymmetric(token, alg)
        raise InvalidToken("invalid token (unsupported signing algorithm)")

    def _verify_hs256(self, token: str, kid: object) -> Principal:
        """An operator's key first (scopes count), then a person's (scopes ignored). A set is
        tried only if it holds the key the token's `kid` names (without a kid: if it has a
        single key)."""
        refusals: list[InvalidToken] = []
        for keys, scoped in ((self.admin_keys, True), (self.user_keys, False)):
            key = _held(keys, kid)
            if keys is None or key is None:
                continue
            try:
                return principal_from_claims(_decode_hs256(keys, token, self.audience, self.issuer, key), scoped=scoped)
            except InvalidToken as exc:
                refusals.append(exc)
        if not refusals:
            raise InvalidToken("invalid token")  # no key of that id: as plain as a bad signature
        # A key whose signature matched says more (expired, another audience) than one that did not.
        raise next((r for r in refusals if str(r) != "invalid token"), refusals[0])

    def _verify_asymmetric(self, token: str, alg: str) -> Principal:
        try:
            key = self.keys.get_signing_key_from_jwt(token)  # type: ignore[union-attr]
        except jwt.PyJWKClientConnectionError as exc:
            log.error("identity provider keys unreachable: %s", type(exc).__name__)
            raise InvalidToken("cannot check the token right now (identity provider keys unavailable)") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise InvalidToken("invalid token (unknown signing key)") from exc
        required = ["sub", "exp", "aud"] + (["iss"] if self.issuer else [])
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer, options={"require": required}
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise InvalidToken("invalid token (not issued for this service)") from exc
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim in ("aud", "iss"):
                raise InvalidToken("invalid token (not issued for this service)") from exc
            raise InvalidToken("invalid token") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("invalid token") from exc
        return principal_from_claims(claims, scoped=True)


def verifier_for(settings: GatewaySettings, keys: GatewayKeys) -> TokenVerifier:
    """The identity provider's keys when configured; HS256 with the key sets
    services.gateway.security resolved (never the development secret beside a provider)."""
    jwks: SigningKeys | None = None
    if settings.jwks_url:
        jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)
    elif settings.jwks_file is not None:
        jwks = JWKSFile(settings.jwks_file)
    return TokenVerifier(keys.user, jwks, audience=settings.jwt_audience, issuer=settings.jwt_issuer, admin_keys=keys.admin)
