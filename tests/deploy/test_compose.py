"""docker-compose.yml: valid Compose, and every service wired the way the code reads it.

No Docker engine runs here: the file is checked against the Compose specification's JSON
schema (shipped inside the pinned `check-jsonschema` package) and against the code itself.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.support.deploy import (
    COMPOSE_FILE,
    ROOT,
    SERVICE_COMMANDS,
    SETTINGS_OF_COMMAND,
    interpolate,
    load_yaml,
    parse_command_line,
    settings_with_env,
    unknown_settings,
)

PORT_FIELD = {"consent": "consent_port", "ingest": "ingest_port", "sink": "sink_port", "gateway": "gateway_port", "audit-writer": "audit_port"}
HOST_FIELD = {"consent": "consent_host", "ingest": "ingest_host", "sink": "sink_host", "gateway": "gateway_host", "audit-writer": "audit_host"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    # It declares draft-07 as "https://json-schema.org/draft-07/schema", a spelling jsonschema
    # does not map to its draft-07 validator by itself.
    cls = jsonschema.Draft7Validator if "draft-07" in schema["$schema"] else jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def consentry_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("command", [None])[0] == "consentry"}


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolate(value) for name, value in (service.get("environment") or {}).items()}


def settings_of(service: dict[str, Any]):  # type: ignore[no-untyped-def]
    command = parse_command_line(service["command"])
    return settings_with_env(SETTINGS_OF_COMMAND[command], environment(service))


def test_the_compose_file_follows_the_compose_specification(compose, compose_validator) -> None:  # type: ignore[no-untyped-def]
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert errors == []


def test_the_specification_check_catches_a_misspelled_key(compose, compose_validator) -> None:  # type: ignore[no-untyped-def]
    broken = copy.deepcopy(compose)
    broken["services"]["sink"]["enviroment"] = broken["services"]["sink"].pop("environment")

    errors = [e.message for e in compose_validator.iter_errors(broken)]

    assert any("enviroment" in message for message in errors)


def test_check_jsonschema_accepts_the_compose_file_offline() -> None:
    """The same check an operator's CI runs: check-jsonschema with its bundled compose schema."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kafka_is_the_official_apache_image_in_kraft_mode(compose) -> None:  # type: ignore[no-untyped-def]
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]

    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CLUSTER_ID" in env and "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from `consentry topics` only
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for name, service in consentry_services(compose).items():
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised["PLAINTEXT"], name
        assert service["environment"]["CONSENTRY_BROKER_FLAVOR"] == "kafka", name


def test_every_consentry_container_runs_a_real_consentry_command(compose) -> None:  # type: ignore[no-untyped-def]
    services = consentry_services(compose)

    commands = {name: parse_command_line(service["command"]) for name, service in services.items()}

    assert commands == {"topics": "topics", "consent": "consent", "ingest": "ingest", "sink": "sink", "gateway": "gateway", "audit-writer": "audit-writer"}


@pytest.mark.parametrize("name", ["topics", *SERVICE_COMMANDS])
def test_every_environment_variable_is_a_setting_the_service_reads(compose, name: str) -> None:  # type: ignore[no-untyped-def]
    service = compose["services"][name]
    settings_class = SETTINGS_OF_COMMAND[parse_command_line(service["command"])]

    assert unknown_settings(settings_class, environment(service)) == []


def test_topics_are_created_before_any_service_starts(compose) -> None:  # type: ignore[no-untyped-def]
    topics = compose["services"]["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SERVICE_COMMANDS:
        depends = compose["services"][name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", name


@pytest.mark.parametrize("name", SERVICE_COMMANDS)
def test_each_service_listens_on_all_interfaces_on_its_published_port(compose, name: str) -> None:  # type: ignore[no-untyped-def]
    service = compose["services"][name]
    settings = settings_of(service)
    port = getattr(settings, PORT_FIELD[name])

    assert getattr(settings, HOST_FIELD[name]) == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in service["ports"]  # on the host's loopback only
    assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])


def test_the_gateway_reaches_the_consent_service_where_it_listens(compose) -> None:  # type: ignore[no-untyped-def]
    gateway = settings_of(compose["services"]["gateway"])
    consent = settings_of(compose["services"]["consent"])

    url = urlsplit(gateway.consent_url)

    assert (url.hostname, url.port) == ("consent", consent.consent_port)
    # Workers route look-ups to each other at their advertised URL: it must be reachable too.
    assert consent.canonical_url == gateway.consent_url


def test_the_keys_and_the_service_token_come_from_the_operator_not_from_the_file(compose) -> None:  # type: ignore[no-untyped-def]
    gateway, consent = compose["services"]["gateway"]["environment"], compose["services"]["consent"]["environment"]
    for name in ("CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS", "CONSENTRY_SERVICE_TOKEN"):
        assert gateway[name].startswith(f"${{{name}:?"), name
    assert consent["CONSENTRY_SERVICE_TOKEN"] == gateway["CONSENTRY_SERVICE_TOKEN"]  # one value for both ends
    assert "CONSENTRY_JWT_SECRET" not in gateway  # one secret for every purpose: loopback and demo only


def test_the_gateway_and_consent_as_composed_would_start(compose) -> None:  # type: ignore[no-untyped-def]
    """With the operator's values in place of the ${...}, the start-up checks pass: nothing
    the file sets (or forgets) makes the gateway or consent refuse to start."""
    from services.consent.views import check_service_token
    from services.gateway.security import check

    def realistic(service: str) -> dict[str, str]:
        env = environment(compose["services"][service])
        for name in env:
            if name.endswith("_KEYS"):
                env[name] = f"{name.lower()}-1:{name.lower():x<40}"
            elif name == "CONSENTRY_SERVICE_TOKEN":
                env[name] = "t" * 64
        return env

    keys = check(settings_with_env(SETTINGS_OF_COMMAND["gateway"], realistic("gateway")))
    assert not keys.single and keys.user is not None and keys.admin is not None
    check_service_token(settings_with_env(SETTINGS_OF_COMMAND["consent"], realistic("consent")))


def test_consent_state_and_training_store_live_on_volumes(compose) -> None:  # type: ignore[no-untyped-def]
    def mounts(name: str) -> dict[str, str]:
        return {target: source for source, target in (v.split(":")[:2] for v in compose["services"][name]["volumes"])}

    consent = settings_of(compose["services"]["consent"])
    sink = settings_of(compose["services"]["sink"])

    consent_mounts, sink_mounts = mounts("consent"), mounts("sink")

    assert any(consent.state_dir.is_relative_to(target) for target in consent_mounts)
    assert any(sink.store_uri.startswith(target + "/") for target in sink_mounts)
    assert set(consent_mounts.values()) | set(sink_mounts.values()) <= set(compose["volumes"])


# ------------------------------------------------------------------ issue 14: no open doors


def test_every_published_port_listens_on_the_hosts_loopback_only(compose) -> None:  # type: ignore[no-untyped-def]
    """Kafka (PLAINTEXT), the consent service and the metrics ports were published on every
    interface of the host: anyone on its network could read objections or write events."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_grafana_takes_its_admin_password_from_the_operator_and_lets_nobody_in_anonymously(compose) -> None:  # type: ignore[no-untyped-def]
    env = compose["services"]["grafana"]["environment"]
    assert str(env.get("GF_SECURITY_ADMIN_PASSWORD", "")).startswith("${GRAFANA_ADMIN_PASSWORD:?"), "Grafana keeps its default admin/admin"
    assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
