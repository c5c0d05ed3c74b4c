"""Kafka security settings (issue 14): every client, aiokafka's and faust's, connects with the
security the settings describe; half-configured settings are refused naming the setting; secrets
come from files and are never repeated in errors. The connections themselves are tested over
real TLS and SASL in tests/integration/test_kafka_security.py and tests/e2e/test_kafka_security.py."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from consentry.kafka import KafkaSecurityError, client_options, faust_credentials, producer_options, ssl_context
from consentry.settings import CommonSettings
from tests.support.tls import make_pki

ROOT = Path(__file__).resolve().parents[2]
SECURED = "kafka-1.example:9093"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "user").write_text("svc-consentry\n")
    (tmp_path / "password").write_text("pa ss,word=\n")  # `echo` adds the newline; inner spaces are the password's
    return {"kafka_sasl_username_file": str(tmp_path / "user"), "kafka_sasl_password_file": str(tmp_path / "password")}


def settings(**values: object) -> CommonSettings:
    return CommonSettings(kafka_bootstrap_servers=SECURED, **values)  # type: ignore[arg-type]


# ------------------------------------------------------------------ settings


def test_the_default_is_plaintext_and_the_options_carry_no_security() -> None:
    options = client_options(CommonSettings())
    assert options == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(CommonSettings()) is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SSL"}, "CONSENTRY_KAFKA_SECURITY_PROTOCOL=SSL needs CONSENTRY_KAFKA_SSL_CAFILE"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"}, "needs CONSENTRY_KAFKA_SSL_CAFILE"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nowhere/ca.pem"}, "CONSENTRY_KAFKA_SSL_CAFILE=/nowhere/ca.pem: no such file"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "needs CONSENTRY_KAFKA_SASL_MECHANISM"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512"}, "needs CONSENTRY_KAFKA_SASL_PASSWORD_FILE"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username_file": "/nowhere/u",
          "kafka_sasl_password_file": "/nowhere/p"}, "CONSENTRY_KAFKA_SASL_USERNAME_FILE=/nowhere/u: no such file"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "CONSENTRY_KAFKA_SASL_MECHANISM is set but CONSENTRY_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL"),
        ({"kafka_ssl_cafile": "system"}, "CONSENTRY_KAFKA_SSL_CAFILE is set but CONSENTRY_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "system", "kafka_ssl_keyfile": "/k.pem"}, "CONSENTRY_KAFKA_SSL_KEYFILE is set without CONSENTRY_KAFKA_SSL_CERTFILE"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_ssl_cafile": "system", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_half_configured_security_is_refused_naming_the_setting(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        settings(**values)


def test_security_toward_the_embedded_broker_is_refused() -> None:
    """`consentry up` without KAFKA_BOOTSTRAP_SERVERS starts Tansu, which speaks PLAINTEXT only."""
    with pytest.raises(ValidationError, match="needs KAFKA_BOOTSTRAP_SERVERS: the embedded broker speaks PLAINTEXT only"):
        CommonSettings(kafka_security_protocol="SSL", kafka_ssl_cafile="system")


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki, secrets: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", SECURED)
    monkeypatch.setenv("CONSENTRY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CONSENTRY_KAFKA_SSL_CAFILE", str(pki.ca))
    monkeypatch.setenv("CONSENTRY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("CONSENTRY_KAFKA_SASL_USERNAME_FILE", secrets["kafka_sasl_username_file"])
    monkeypatch.setenv("CONSENTRY_KAFKA_SASL_PASSWORD_FILE", secrets["kafka_sasl_password_file"])
    options = client_options(CommonSettings())
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"]) == ("SASL_SSL", "SCRAM-SHA-256", "svc-consentry")


def test_settings_errors_never_repeat_the_values_they_were_given(secrets: dict[str, str]) -> None:
    """A refused configuration is printed at start-up: it must not carry the other settings'
    values (the gateway's signing secret) into the logs, and the settings hold paths, not secrets."""
    from services.gateway.settings import GatewaySettings

    signing_secret = "never-print-me-" + "x" * 32
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(jwt_secret=signing_secret, kafka_bootstrap_servers=SECURED, kafka_security_protocol="SSL")
    assert "CONSENTRY_KAFKA_SSL_CAFILE" in str(refused.value)
    assert signing_secret not in str(refused.value)

    configured = settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN", **secrets)
    assert "pa ss,word=" not in repr(configured)


# ------------------------------------------------------------------ what the clients get


def test_tls_options_check_the_brokers_against_the_configured_ca(pki) -> None:  # type: ignore[no-untyped-def]
    options = client_options(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(pki.ca)))
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL"
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [dict(entry[0] for entry in c["subject"])["commonName"] for c in context.get_ca_certs()] == ["consentry test CA"]
    assert "sasl_mechanism" not in options

    unchecked = ssl_context(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(pki.ca), kafka_ssl_check_hostname=False))
    assert unchecked.verify_mode == ssl.CERT_REQUIRED and not unchecked.check_hostname  # the chain is still checked


def test_the_system_trust_store_when_asked_for() -> None:
    context = ssl_context(settings(kafka_security_protocol="SSL", kafka_ssl_cafile="system"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    default = ssl.create_default_context()
    assert context.cert_store_stats() == default.cert_store_stats()


def test_a_client_certificate_with_an_encrypted_key_loads_with_its_password_file(pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mutual = {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": str(pki.ca), "kafka_ssl_certfile": str(pki.client_cert), "kafka_ssl_keyfile": str(pki.client_key)}
    assert isinstance(ssl_context(settings(**mutual, kafka_ssl_key_password_file=str(pki.client_key_password))), ssl.SSLContext)

    # Refused when the settings are read (start-up), naming the setting.
    (tmp_path / "wrong").write_text("not-the-password")
    with pytest.raises(ValidationError, match=r"CONSENTRY_KAFKA_SSL_CERTFILE=.*cannot load the client certificate and its key"):
        settings(**mutual, kafka_ssl_key_password_file=str(tmp_path / "wrong"))
    # Without a password file the key is not decrypted, and OpenSSL never prompts on a terminal.
    with pytest.raises(ValidationError, match="is the key password right"):
        settings(**mutual)


def test_a_file_that_is_not_a_ca_certificate_is_refused_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValidationError, match="CONSENTRY_KAFKA_SSL_CAFILE=.*cannot load CA certificates from it"):
        settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "ca.pem"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_options_read_the_user_and_password_from_their_files(protocol: str, mechanism: str, secrets: dict[str, str], pki) -> None:  # type: ignore[no-untyped-def]
    tls = {"kafka_ssl_cafile": str(pki.ca)} if protocol == "SASL_SSL" else {}
    configured = settings(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism, **secrets, **tls)
    options = client_options(configured)
    assert options["security_protocol"] == protocol
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc-consentry", "pa ss,word=")
    assert ("ssl_context" in options) is (protocol == "SASL_SSL")
    produced = producer_options(configured)  # producers connect the same way
    assert {k: produced[k] for k in options if k != "ssl_context"} == {k: v for k, v in options.items() if k != "ssl_context"}
    assert ("ssl_context" in produced) is ("ssl_context" in options)


def test_an_empty_secret_file_is_refused_naming_the_setting(secrets: dict[str, str]) -> None:
    sasl = {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", **secrets}
    configured = settings(**sasl)
    Path(secrets["kafka_sasl_password_file"]).write_text("\n")
    with pytest.raises(ValidationError, match="CONSENTRY_KAFKA_SASL_PASSWORD_FILE=.*the file is empty"):
        settings(**sasl)  # at start-up
    with pytest.raises(KafkaSecurityError, match="CONSENTRY_KAFKA_SASL_PASSWORD_FILE=.*the file is empty"):
        client_options(configured)  # emptied after start-up: the next client is refused, not built without a password


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_the_same_connection_as_every_other_client(protocol: str, secrets: dict[str, str], pki) -> None:  # type: ignore[no-untyped-def]
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    values: dict[str, object] = {"kafka_security_protocol": protocol}
    if "SSL" in protocol:
        values["kafka_ssl_cafile"] = str(pki.ca)
    if "SASL" in protocol:
        values |= {"kafka_sasl_mechanism": "SCRAM-SHA-512", **secrets}
    configured = settings(**values)
    faust_side = {k: v for k, v in credentials_to_aiokafka_auth(faust_credentials(configured)).items() if v is not None}
    ours = {k: v for k, v in client_options(configured).items() if k != "bootstrap_servers"}
    assert set(faust_side) == set(ours)
    for key, value in ours.items():
        if key == "ssl_context":
            assert faust_side[key].get_ca_certs() == value.get_ca_certs() and faust_side[key].check_hostname
        else:
            assert faust_side[key] == value, key


async def test_the_consent_service_builds_its_kafka_clients_with_the_security_settings(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    """faust builds its own producer and consumers: they must get TLS too (before: PLAINTEXT)."""
    from services.consent.app import create_app
    from services.consent.settings import ConsentSettings

    configured = ConsentSettings(
        consent_store="memory://", kafka_bootstrap_servers=SECURED, partitions=1, data_dir=tmp_path,
        kafka_security_protocol="SSL", kafka_ssl_cafile=str(pki.ca),
    )
    app = create_app(configured)
    app.finalize()
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    producer = app.producer._new_producer()
    try:
        for client in (consumer._client, producer.client):
            assert client._security_protocol == "SSL"
            assert [c["serialNumber"] for c in client._ssl_context.get_ca_certs()] == [c["serialNumber"] for c in ssl_context(configured).get_ca_certs()]
    finally:
        await consumer.stop()
        await producer.stop()


# ------------------------------------------------------------------ every call site


CONSTRUCTORS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
CONNECTION_TAKERS = {"group_consumer", "record_timestamps", "true_end_offsets"}  # their first argument is the connection
# client_connection: what faust's own client was built with (from faust_credentials), in consentry.patches.
OPTION_HELPERS = {"client_options", "producer_options", "client_connection"}
# The one client left PLAINTEXT on purpose: the embedded broker's own readiness probe on 127.0.0.1.
ALLOWED = {
    ("consentry_cli/broker.py", "wait_for_metadata"),
    # The client library of the platform's producers (standard library at import: it reads no
    # Consentry setting); their security options come as `producer_options` (security_protocol,
    # ssl_context, sasl_*), passed to the producer whole.
    ("consentry/client/__init__.py", "_publish"),
}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _carries_the_connection(node: ast.AST) -> bool:
    """A call of client_options/producer_options, or a `connection` handed down from one."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call) and _name(inner.func) in OPTION_HELPERS:
            return True
        if isinstance(inner, ast.Name) and inner.id == "connection":
            return True
    return False


def kafka_client_call_sites() -> list[tuple[str, str, int, str]]:
    """(file, enclosing function, line, what is wrong) for every Kafka client built in the
    product (consentry, services, consentry_cli) other than through `client_options`."""
    problems = []
    for package in ("consentry", "services", "consentry_cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), relative)
            functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]

            def enclosing(line: int) -> str:
                inside = [f for f in functions if f.lineno <= line <= (f.end_lineno or line)]
                return max(inside, key=lambda f: f.lineno).name if inside else "<module>"

            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                name = _name(call.func)
                where = (relative, enclosing(call.lineno))
                if name in CONSTRUCTORS and where not in ALLOWED:
                    spread = [k.value for k in call.keywords if k.arg is None]
                    if any(k.arg == "bootstrap_servers" for k in call.keywords) or not any(_carries_the_connection(v) for v in spread):
                        problems.append((*where, call.lineno, f"{name} not built with **client_options(settings)"))
                elif name in CONNECTION_TAKERS and call.args and not _carries_the_connection(call.args[0]):
                    problems.append((*where, call.lineno, f"{name} not given client_options(settings)"))
                elif name == "App" and _name(getattr(call.func, "value", ast.Name(""))) == "faust":
                    if not any(k.arg == "broker_credentials" for k in call.keywords):
                        problems.append((*where, call.lineno, "faust.App without broker_credentials=faust_credentials(settings)"))
    return problems


def test_every_kafka_client_is_built_with_the_security_settings() -> None:
    assert kafka_client_call_sites() == []


def test_the_call_site_check_sees_every_kind_of_client() -> None:
    """The check above finds what it looks for: every constructor is used somewhere it checks."""
    seen = set()
    for package in ("consentry", "services", "consentry_cli"):
        for path in (ROOT / package).rglob("*.py"):
            for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
                seen.add(_name(call.func))
    assert {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient", "group_consumer", "true_end_offsets", "App"} <= seen
