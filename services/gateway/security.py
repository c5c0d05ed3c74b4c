"""What the gateway trusts, decided once at start-up: the keys of each purpose, the identity
provider's requirements, the service token toward consent, the trusted proxies.

Each purpose has its own key set (consentry.keys): people's bearer tokens
(`CONSENTRY_USER_KEYS`), operators' bearer tokens (`CONSENTRY_ADMIN_KEYS`), one-click links
(`CONSENTRY_LINK_KEYS`, from which the CSRF keys of the one-click form derive).

`CONSENTRY_JWT_SECRET` is the older single secret: it serves every purpose that has no key
set of its own, and only while the gateway listens on loopback or runs the demo. Without it,
the public development secret stands in, on the same condition, and never once an identity
provider is configured. Beyond loopback every purpose in use needs its own key set: a
gateway that would accept tokens anyone can sign refuses to start, naming what to set.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from itertools import combinations
from urllib.parse import urlsplit

from consentry.web import is_loopback
from consentry.keys import KeyConfigError, KeySet, MIN_SECRET_LENGTH
from services.gateway.settings import DEV_SECRET, GatewaySettings

log = logging.getLogger(__name__)

USER, ADMIN, LINK = "CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS"
SINGLE = "CONSENTRY_JWT_SECRET"
HOW = "`kid:secret` entries, comma-separated, oldest first, each secret at least 32 characters: docs/operations.md, \"Keys and rotation\""


class InsecureConfiguration(Exception):
    """The gateway must not start with these settings; the message says what to set."""


@dataclass(frozen=True)
class GatewayKeys:
    user: KeySet | None  # None: people's tokens come from the identity provider only
    admin: KeySet | None  # None: operators' tokens come from the identity provider only
    link: KeySet
    single: bool  # some purpose uses the single secret (CONSENTRY_JWT_SECRET or the development one)


def _identity_provider(settings: GatewaySettings) -> bool:
    return bool(settings.jwks_url) or settings.jwks_file is not None


def _single_secret(settings: GatewaySettings) -> KeySet | None:
    """The one secret purposes without their own keys fall back to, where that is allowed."""
    local = is_loopback(settings.gateway_host) or settings.demo
    if not local:
        return None
    if settings.insecure_secret:
        if _identity_provider(settings):
            return None  # the development secret is public: it must never open an identity-provider deployment
        return KeySet.single(DEV_SECRET, SINGLE)
    return KeySet.single(settings.jwt_secret or "", SINGLE)


def _missing(settings: GatewaySettings, names: list[str]) -> str:
    listed = ", ".join(names)
    host = settings.gateway_host
    if is_loopback(host) or settings.demo:
        return (
            f"{listed} not set: with an identity provider (CONSENTRY_JWKS_URL or CONSENTRY_JWKS_FILE) the public development "
            f"secret opens nothing, not even one-click links. Set {listed} ({HOW}), or {SINGLE} while on loopback."
        )
    if settings.insecure_secret:
        why = (
            f"{SINGLE} is not set, so tokens and links would be checked with the public development secret "
            "(anyone could sign a token for any person, or an operator's)"
        )
    else:
        why = f"{SINGLE} alone serves every purpose with one secret, which only loopback or the demo allows"
    return (
        f"the gateway listens on {host}, beyond loopback, and {why}. Set a key set per purpose: {listed} ({HOW}); "
        f"or listen on 127.0.0.1 (GATEWAY_HOST), or run the demo (consentry up --demo)."
    )


def purpose_keys(settings: GatewaySettings, setting: str) -> KeySet | None:
    """One purpose's keys: its own setting, else the single secret where allowed; None when
    the identity provider alone serves it (people's and operators' tokens). Raises
    InsecureConfiguration when the purpose has no usable key."""
    value = {USER: settings.user_keys, ADMIN: settings.admin_keys, LINK: settings.link_keys}[setting]
    try:
        if value is not None:
            return KeySet.parse(value, setting)
        single = _single_secret(settings)
    except KeyConfigError as exc:
        raise InsecureConfiguration(str(exc)) from exc
    if single is not None:
        return single
    if setting != LINK and _identity_provider(settings):
        return None
    raise InsecureConfiguration(_missing(settings, [setting]))


def check(settings: GatewaySettings) -> GatewayKeys:
    """Every key and trust setting, or InsecureConfiguration listing every problem."""
    problems: list[str] = []
    keys: dict[str, KeySet | None] = {}
    missing: list[str] = []
    for setting in (USER, ADMIN, LINK):
        try:
            keys[setting] = purpose_keys(settings, setting)
        except InsecureConfiguration as exc:
            if isinstance(exc.__cause__, KeyConfigError):
                problems.append(str(exc))
            else:
                missing.append(setting)
    if missing:
        problems.insert(0, _missing(settings, missing))

    # A secret may serve one purpose only (the single secret aside, on loopback): the notice
    # sender holds the link keys and must not be able to sign anybody's API token with them.
    for (a, ka), (b, kb) in combinations(keys.items(), 2):
        if ka is None or kb is None or (ka.setting == SINGLE and kb.setting == SINGLE):
            continue
        if ka.secrets() & kb.secrets():
            problems.append(f"{ka.setting} and {kb.setting} share a secret: each purpose needs keys of its own")

    if _identity_provider(settings):
        if not settings.jwt_issuer:
            problems.append(
                "CONSENTRY_JWT_ISSUER is not set: with an identity provider every token must name its issuer "
                "(and CONSENTRY_JWT_AUDIENCE its audience), or another provider's tokens could be taken for people here"
            )
    if not settings.jwt_audience.strip():
        problems.append("CONSENTRY_JWT_AUDIENCE is empty: every bearer token must name this service as its audience")

    token = settings.service_token
    if token is not None and len(token) < MIN_SECRET_LENGTH:
        problems.append(f"CONSENTRY_SERVICE_TOKEN is {len(token)} characters long; at least {MIN_SECRET_LENGTH} are required")
    consent_host = urlsplit(settings.consent_url).hostname or ""
    if token is None and not is_loopback(consent_host):
        problems.append(
            f"CONSENTRY_SERVICE_TOKEN is not set while the consent service ({settings.consent_url}) is beyond loopback: "
            "it answers user look-ups only with it (set the same value on both)"
        )

    for proxy in settings.trusted_proxy_list:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(f"CONSENTRY_TRUSTED_PROXIES: {proxy!r} is not an IP address or network")

    if problems:
        raise InsecureConfiguration("; ".join(problems))
    link = keys[LINK]
    assert link is not None  # purpose_keys never returns None for links
    single = any(k is not None and k.setting == SINGLE for k in keys.values())
    if single:
        where = "the demo" if settings.demo and not is_loopback(settings.gateway_host) else f"loopback ({settings.gateway_host})"
        secret = "the development secret" if settings.insecure_secret else SINGLE
        log.warning("%s signs and verifies tokens and links of every purpose without keys of its own: allowed on %s only", secret, where)
    elif settings.jwt_secret is not None:
        log.warning("%s is ignored: every purpose has keys of its own", SINGLE)
    return GatewayKeys(user=keys[USER], admin=keys[ADMIN], link=link, single=single)
