"""A newcomer's deployment: the image's command started beyond loopback without any secret.
The gateway (and the consent service's views) must exit with a message naming what to set,
before listening anywhere, instead of serving anyone who signs with the public development
secret (or reads any person's objections). Real processes, as the image runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.ports import free_port

SECRETS = ("CONSENTRY_JWT_SECRET", "CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS", "CONSENTRY_SERVICE_TOKEN", "CONSENTRY_DEMO")


def run(command: str, tmp_path, **env: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    clean.update(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", CONSENTRY_DATA_DIR=str(tmp_path), **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "consentry_cli", command], env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        pytest.fail(f"consentry {command} was still running after 60 s instead of refusing to start")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_gateway_refuses_to_listen_beyond_loopback_with_the_development_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    refused = run("gateway", tmp_path, GATEWAY_HOST="0.0.0.0", GATEWAY_PORT=str(free_port()))

    assert refused.returncode == 2, refused.stderr[-2000:]
    message = refused.stderr
    assert "refusing to start" in message and "0.0.0.0" in message and "development secret" in message
    for setting in ("CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS"):
        assert setting in message
    assert "Traceback" not in message


def test_the_gateway_refuses_a_short_key_naming_its_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    long = "k" * 40
    refused = run(
        "gateway", tmp_path, GATEWAY_HOST="0.0.0.0", GATEWAY_PORT=str(free_port()), CONSENTRY_USER_KEYS=f"u1:{long}1",
        CONSENTRY_ADMIN_KEYS=f"a1:{long}2", CONSENTRY_LINK_KEYS="l1:too-short", CONSENTRY_SERVICE_TOKEN=long,
    )
    assert refused.returncode == 2
    assert "CONSENTRY_LINK_KEYS" in refused.stderr and "at least 32" in refused.stderr and "too-short" not in refused.stderr


def test_the_consent_views_refuse_to_listen_beyond_loopback_without_a_service_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    refused = run("consent", tmp_path, CONSENTRY_CONSENT_HOST="0.0.0.0", CONSENTRY_CONSENT_PORT=str(free_port()))

    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "refusing to start" in refused.stderr and "CONSENTRY_SERVICE_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr
