"""HMAC signing keys by purpose, each with a key id, so keys can be rotated (HS256 JWTs).

A key set is one setting's value: `kid:secret` entries separated by commas or new lines,
oldest first, for example `CONSENTRY_LINK_KEYS=2025-06:4f1c...,2025-12:9ab0...`. The last
entry signs (new links and tokens carry its id in their `kid` header); every entry verifies
the tokens that name it. Rotating is adding a key at the end, then, once no valid token
names the old one any more, removing it (docs/operations.md, "Keys and rotation").

Each purpose (people's tokens, operators' tokens, one-click links) has its own set: a key
of one purpose never verifies a token of another, so whoever holds the link key (the notice
sender) cannot mint an API token. Secrets are never logged nor shown in a repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import jwt

ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32  # characters; `openssl rand -hex 32` gives 64
KID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The id of the one key a single secret (CONSENTRY_JWT_SECRET, or a secret passed as a str) makes.
SINGLE_KID = "default"


class KeyConfigError(ValueError):
    """A key set cannot be used; the message names the setting and never shows a secret."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: str = field(repr=False)


class UnknownKey(jwt.InvalidTokenError):
    """The token names no key of this set (or names none while the set has several)."""


class KeySet:
    """The keys of one purpose, oldest first; the last one signs."""

    __slots__ = ("setting", "keys", "_by_kid")

    def __init__(self, keys: Iterable[SigningKey], setting: str) -> None:
        self.setting = setting
        self.keys = tuple(keys)
        if not self.keys:
            raise KeyConfigError(f"{setting} holds no key")
        self._by_kid: dict[str, SigningKey] = {}
        for key in self.keys:
            if not KID_PATTERN.fullmatch(key.kid):
                raise KeyConfigError(
                    f"{setting}: key id {key.kid[:70]!r} is not valid (1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit)"
                )
            if key.kid in self._by_kid:
                raise KeyConfigError(f"{setting}: key id {key.kid!r} appears twice")
            if len(key.secret) < MIN_SECRET_LENGTH:
                raise KeyConfigError(
                    f"{setting}: the secret of key {key.kid!r} is {len(key.secret)} characters long; at least "
                    f"{MIN_SECRET_LENGTH} are required (for example the output of `openssl rand -hex 32`)"
                )
            self._by_kid[key.kid] = key

    @classmethod
    def parse(cls, value: str, setting: str) -> KeySet:
        """`kid:secret` entries separated by commas or new lines, oldest first."""
        keys = []
        for entry in re.split(r"[,\n]", value):
            entry = entry.strip()
            if not entry:
                continue
            kid, sep, secret = entry.partition(":")
            if not sep or not kid.strip() or not secret.strip():
                raise KeyConfigError(f"{setting}: every entry must be `kid:secret` (comma-separated, oldest first)")
            keys.append(SigningKey(kid.strip(), secret.strip()))
        return cls(keys, setting)

    @classmethod
    def single(cls, secret: str, setting: str, kid: str = SINGLE_KID) -> KeySet:
        return cls([SigningKey(kid, secret)], setting)

    @property
    def signing(self) -> SigningKey:
        return self.keys[-1]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(key.kid for key in self.keys)

    def secrets(self) -> frozenset[str]:
        return frozenset(key.secret for key in self.keys)

    def get(self, kid: str) -> SigningKey | None:
        return self._by_kid.get(kid)

    def sign(self, claims: Mapping[str, object]) -> str:
        key = self.signing
        return jwt.encode(dict(claims), key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})

    def key_for(self, token: str) -> SigningKey:
        """The key the token's `kid` header names; a token without one only when the set has a
        single key (tokens signed before key ids existed). Raises UnknownKey, or PyJWT's
        DecodeError for something that is not a JWT."""
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None:
            if len(self.keys) == 1:
                return self.keys[0]
            raise UnknownKey("the token names no key id and several keys are configured")
        key = self._by_kid.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownKey("the token names an unknown key id")
        return key

    def decode(self, token: str, **options: object) -> dict[str, object]:
        """The verified claims (PyJWT's `jwt.decode` options: audience, issuer, options=...)."""
        key = self.key_for(token)
        return jwt.decode(token, key.secret, algorithms=[ALGORITHM], **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"KeySet({self.setting}: {', '.join(self.kids)})"


def key_set(keys: str | KeySet, setting: str = "a secret") -> KeySet:
    """`keys` as a key set: a plain secret is a set of one key (id `default`)."""
    return keys if isinstance(keys, KeySet) else KeySet.single(keys, setting)
