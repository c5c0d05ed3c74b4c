"""What the gateway trusts, decided at start-up (services.gateway.security): a key set per
purpose, the development secret only where nobody else can reach it, distinct secrets, an
identity provider's issuer, the service token, the trusted proxies."""

from __future__ import annotations

import pytest

from consentry.keys import KeyConfigError, KeySet
from services.gateway.security import InsecureConfiguration, check, is_loopback, purpose_keys
from services.gateway.settings import DEV_SECRET, GatewaySettings

U, A, L = "u1:" + "u" * 40, "a1:" + "a" * 40, "l1:" + "l" * 40
TOKEN = "t" * 40


def settings(**values: object) -> GatewaySettings:
    return GatewaySettings(_env_file=None, **values)  # type: ignore[call-arg]


def refusal(**values: object) -> str:
    with pytest.raises(InsecureConfiguration) as refused:
        check(settings(**values))
    return str(refused.value)


def test_a_key_set_is_kid_secret_pairs_oldest_first_and_the_newest_signs() -> None:
    keys = KeySet.parse(f"2025-06:{'o' * 40},\n 2025-12:{'n' * 40}", "CONSENTRY_LINK_KEYS")
    assert keys.kids == ("2025-06", "2025-12") and keys.signing.kid == "2025-12"
    assert "o" * 40 not in repr(keys)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "holds no key"),
        ("no-colon-here", "every entry must be `kid:secret`"),
        ("k1:short", "at least 32"),
        (f"k1:{'x' * 40},k1:{'y' * 40}", "appears twice"),
        (f"bad kid:{'x' * 40}", "not valid"),
    ],
)
def test_a_malformed_key_set_is_refused_naming_its_setting_and_never_showing_a_secret(value: str, message: str) -> None:
    with pytest.raises(KeyConfigError) as refused:
        KeySet.parse(value, "CONSENTRY_USER_KEYS")
    assert message in str(refused.value) and "CONSENTRY_USER_KEYS" in str(refused.value) and "short" not in str(refused.value)


def test_on_loopback_the_development_secret_still_serves_every_purpose() -> None:
    keys = check(settings())
    assert keys.single and {k.signing.secret for k in (keys.user, keys.admin, keys.link)} == {DEV_SECRET}
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_beyond_loopback_neither_the_development_secret_nor_one_secret_for_everything_starts() -> None:
    message = refusal(gateway_host="0.0.0.0")
    assert "development secret" in message and all(s in message for s in ("CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS"))
    message = refusal(gateway_host="0.0.0.0", jwt_secret="s" * 40)
    assert "CONSENTRY_JWT_SECRET alone serves every purpose" in message
    message = refusal(gateway_host="0.0.0.0", user_keys=U, admin_keys=A)
    assert "CONSENTRY_LINK_KEYS" in message and "CONSENTRY_USER_KEYS," not in message  # only what is missing


def test_the_demo_may_use_the_development_secret_beyond_loopback() -> None:
    assert check(settings(gateway_host="0.0.0.0", demo=True)).single


def test_beyond_loopback_with_a_key_set_per_purpose_the_gateway_starts_and_ignores_the_single_secret() -> None:
    keys = check(settings(gateway_host="0.0.0.0", user_keys=U, admin_keys=A, link_keys=L, jwt_secret="s" * 40))
    assert not keys.single and (keys.user.kids, keys.admin.kids, keys.link.kids) == (("u1",), ("a1",), ("l1",))


def test_a_secret_serves_one_purpose_only() -> None:
    message = refusal(user_keys=U, admin_keys=A, link_keys="l1:" + "u" * 40)
    assert "CONSENTRY_USER_KEYS and CONSENTRY_LINK_KEYS share a secret" in message
    # The single secret may not stand in for one purpose while it is another's own key.
    assert "share a secret" in refusal(user_keys="u1:" + "s" * 40, jwt_secret="s" * 40)


def test_with_an_identity_provider_the_development_secret_serves_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    jwks = tmp_path / "jwks.json"
    message = refusal(jwks_file=jwks, jwt_issuer="https://id.example")
    assert "CONSENTRY_LINK_KEYS" in message and "opens nothing" in message
    keys = check(settings(jwks_file=jwks, jwt_issuer="https://id.example", link_keys=L))
    assert keys.user is None and keys.admin is None and keys.link.kids == ("l1",)
    assert purpose_keys(settings(jwks_file=jwks, jwt_issuer="https://id.example", link_keys=L), "CONSENTRY_USER_KEYS") is None
    assert "CONSENTRY_JWT_ISSUER" in refusal(jwks_file=jwks, link_keys=L)


def test_the_service_token_is_required_toward_a_consent_service_beyond_loopback() -> None:
    assert "CONSENTRY_SERVICE_TOKEN" in refusal(consent_url="http://consent:6066")
    assert "at least 32" in refusal(service_token="short")
    check(settings(consent_url="http://consent:6066", service_token=TOKEN))


def test_trusted_proxies_are_addresses_or_networks() -> None:
    check(settings(trusted_proxies="10.0.0.0/8, 127.0.0.1,::1"))
    assert "not an IP address" in refusal(trusted_proxies="proxy.example")
