"""Settings shared by every service: where the broker is, how to reach it safely, and what the
topics are called.

Each service has its own pydantic-settings class that extends `CommonSettings`. The Kafka
security settings are turned into client options in one place, `consentry.kafka.client_options`
(and `faust_credentials` for the consent service); docs/kafka-security.md explains them.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentry.topics import Topics


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SYSTEM_TRUST = "system"  # CONSENTRY_KAFKA_SSL_CAFILE=system: the system's trust store


class CommonSettings(BaseSettings):
    # hide_input_in_errors: a settings error never repeats the values it was given (secrets).
    model_config = SettingsConfigDict(env_prefix="CONSENTRY_", extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="An existing Kafka cluster; unset means the embedded broker.",
    )
    broker_port: int = Field(default=9092, description="Port of the embedded broker.")
    broker_flavor: Literal["auto", "kafka", "tansu"] = Field(
        default="auto",
        description="'auto': the embedded Tansu broker when KAFKA_BOOTSTRAP_SERVERS is unset, Apache Kafka otherwise.",
    )
    partitions: int = Field(default=8, ge=1, description="Partitions of the user-keyed topics Consentry creates.")
    topic_prefix: str = Field(default="", description="Prefix for every topic name (isolates test runs).")
    data_dir: Path = Field(default=Path("./var"), description="Local state: consent tables, logs.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per log line (consentry/logs.py); 'text': readable lines."
    )

    otlp_endpoint: str | None = Field(
        default=None, description="OpenTelemetry collector (OTLP/HTTP, e.g. http://collector:4318): traces of each objection's path; unset: no tracing."
    )
    trace_file: Path | None = Field(default=None, description="Write spans as JSON lines to this file (tests, debugging); unset: no file.")

    # Consent, ingest and the sink are consumer-group members; one definition for all three.
    session_timeout_ms: int = Field(default=10_000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(default=2_000, description="Consumer group heartbeat interval.")

    # How every Kafka client (aiokafka and faust) connects: docs/kafka-security.md. Secrets are
    # read from files, when a client is built; the settings hold paths only.
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Kafka's security.protocol)."
    )
    kafka_ssl_cafile: str | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the brokers' certificates, or 'system' for the system's "
        "trust store; required with SSL and SASL_SSL.",
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate (PEM), for brokers that require mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="The client certificate's private key (PEM), if not in the certificate file.")
    kafka_ssl_key_password_file: Path | None = Field(default=None, description="File holding the password of an encrypted private key.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate names the host it was reached at (Kafka's https endpoint identification)."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_PLAINTEXT and SASL_SSL."
    )
    kafka_sasl_username_file: Path | None = Field(default=None, description="File holding the SASL user name.")
    kafka_sasl_password_file: Path | None = Field(default=None, description="File holding the SASL password.")

    @model_validator(mode="after")
    def _check_kafka_security(self) -> CommonSettings:
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        if self.kafka_security_protocol != "PLAINTEXT":
            # Build the options once now: a CA file that is not PEM, a key that does not decrypt
            # or an empty secret file stops the service at start-up, not at its first connection.
            from consentry.kafka import KafkaSecurityError, client_options

            try:
                client_options(self)
            except KafkaSecurityError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def on_embedded_broker(self) -> bool:
        """True when talking to Tansu: broker workarounds (consentry.patches) switch on."""
        if self.broker_flavor == "auto":
            return self.kafka_bootstrap_servers is None
        return self.broker_flavor == "tansu"

    @cached_property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)


def kafka_security_problems(settings: CommonSettings) -> list[str]:
    """What is wrong with the Kafka security settings, each naming the setting to fix (empty: fine).

    Checked when the settings are read, so a service refuses to start on a half-configured
    cluster connection rather than failing (or, worse, connecting in the clear) later."""
    protocol = settings.kafka_security_protocol
    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    problems: list[str] = []
    if protocol != "PLAINTEXT" and settings.kafka_bootstrap_servers is None:
        problems.append(
            f"CONSENTRY_KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_BOOTSTRAP_SERVERS: the embedded broker speaks PLAINTEXT only"
        )
    if tls:
        if not settings.kafka_ssl_cafile:
            problems.append(
                f"CONSENTRY_KAFKA_SECURITY_PROTOCOL={protocol} needs CONSENTRY_KAFKA_SSL_CAFILE: the PEM file of the CA that "
                f"signed the brokers' certificates, or '{SYSTEM_TRUST}' to trust the system's store (a managed cluster with a public certificate)"
            )
        elif settings.kafka_ssl_cafile != SYSTEM_TRUST:
            problems += _unreadable("CONSENTRY_KAFKA_SSL_CAFILE", Path(settings.kafka_ssl_cafile))
        if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
            problems.append("CONSENTRY_KAFKA_SSL_KEYFILE is set without CONSENTRY_KAFKA_SSL_CERTFILE: the key of which certificate?")
        if settings.kafka_ssl_key_password_file is not None and settings.kafka_ssl_certfile is None:
            problems.append("CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE is set without CONSENTRY_KAFKA_SSL_CERTFILE")
        for name, path in (
            ("CONSENTRY_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
            ("CONSENTRY_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
            ("CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE", settings.kafka_ssl_key_password_file),
        ):
            if path is not None:
                problems += _unreadable(name, path)
    else:
        for name, value in (
            ("CONSENTRY_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
            ("CONSENTRY_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
            ("CONSENTRY_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
            ("CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE", settings.kafka_ssl_key_password_file),
        ):
            if value is not None:
                problems.append(f"{name} is set but CONSENTRY_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS (SSL or SASL_SSL does)")
    if sasl:
        if settings.kafka_sasl_mechanism is None:
            problems.append(f"CONSENTRY_KAFKA_SECURITY_PROTOCOL={protocol} needs CONSENTRY_KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
        for name, path in (
            ("CONSENTRY_KAFKA_SASL_USERNAME_FILE", settings.kafka_sasl_username_file),
            ("CONSENTRY_KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file),
        ):
            if path is None:
                problems.append(f"CONSENTRY_KAFKA_SECURITY_PROTOCOL={protocol} needs {name}")
            else:
                problems += _unreadable(name, path)
    else:
        for name, value in (
            ("CONSENTRY_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
            ("CONSENTRY_KAFKA_SASL_USERNAME_FILE", settings.kafka_sasl_username_file),
            ("CONSENTRY_KAFKA_SASL_PASSWORD_FILE", settings.kafka_sasl_password_file),
        ):
            if value is not None:
                problems.append(f"{name} is set but CONSENTRY_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL (SASL_PLAINTEXT or SASL_SSL does)")
    return problems


def _unreadable(name: str, path: Path) -> list[str]:
    if not path.is_file():
        return [f"{name}={path}: no such file"]
    if not os.access(path, os.R_OK):
        return [f"{name}={path}: not readable by this process"]
    return []
