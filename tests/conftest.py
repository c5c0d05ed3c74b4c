"""Shared fixtures: one embedded broker per test session, unique names per test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consentry_cli.broker import EmbeddedBroker
from tests.support import ledger
from tests.support.ports import free_port
from tests.support.s3 import S3Server, s3_server
from tests.support.system import System
from tests.support.sasl import SaslTerminator, sasl_ssl_broker
from tests.support.tls import SecuredBroker, tls_broker

# start_gateway: a real gateway (uvicorn) inside the test process, for HTTP integration tests.
pytest_plugins = ["tests.support.gateway"]

OUTPUT = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="session")
def broker() -> Iterator[tuple[str, str]]:
    """(bootstrap, flavor). KAFKA_BOOTSTRAP_SERVERS runs the suite against a real cluster."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external, "kafka"
        return
    embedded = EmbeddedBroker(free_port(), log_path=OUTPUT / f"broker-{os.getpid()}.log")
    embedded.start()
    try:
        yield embedded.bootstrap, "tansu"
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 API server (moto's server mode, its own process), started on first use."""
    with s3_server(log_path=OUTPUT / f"s3-{os.getpid()}.log") as server:
        yield server


@pytest.fixture(scope="session")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A second embedded broker, reached only through stunnel with mutual TLS (started on first
    use): the Kafka security tests' cluster (tests/support/tls.py)."""
    with tls_broker(tmp_path_factory.mktemp("tls-cluster"), log_path=OUTPUT / f"broker-tls-{os.getpid()}.log") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecuredBroker, SaslTerminator]]:
    """Another embedded broker, behind stunnel (TLS) and a SASL terminator (PLAIN, SCRAM-SHA-256/512):
    SASL_SSL as managed clusters offer it (tests/support/sasl.py)."""
    with sasl_ssl_broker(tmp_path_factory.mktemp("sasl-cluster"), log_path=OUTPUT / f"broker-sasl-{os.getpid()}.log") as cluster:
        yield cluster


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """A whole Consentry (topics created, services not started yet) under a fresh prefix."""
    yield from running_system(broker, tmp_path, request)


def running_system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> Iterator[System]:
    """A System (options: System's keywords); on failure, its logs printed and kept."""
    bootstrap, flavor = broker
    with System(bootstrap, flavor, tmp_path, **options) as sut:
        yield sut
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for name in sorted(path.stem for path in sut.log_dir.glob("*.log")):
                print(f"\n===== {name} log (tail) =====\n{sut.log(name)[-4000:]}")
            # Whole logs where they outlive pytest's rotation of temporary directories.
            import re
            import shutil

            keep = OUTPUT / "failed" / re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-150:]
            shutil.copytree(sut.log_dir, keep, dirs_exist_ok=True)
            print(f"logs kept in {keep}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _worker_id(config) -> str | None:  # type: ignore[no-untyped-def]
    """The pytest-xdist worker this process is (`make test` runs two), or None."""
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_sessionstart(session) -> None:  # type: ignore[no-untyped-def]
    if _worker_id(session.config) is None:
        for stale in OUTPUT.glob("ledger-*.json"):
            stale.unlink()


def pytest_sessionfinish(session) -> None:  # type: ignore[no-untyped-def]
    """A worker hands its figures to the controller, which prints the summary."""
    worker = _worker_id(session.config)
    if worker is not None and ledger.figures():
        OUTPUT.mkdir(exist_ok=True)
        (OUTPUT / f"ledger-{worker}.json").write_text(json.dumps(ledger.figures()))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """One line per guarantee with the figures the reliability tests measured (every worker's)."""
    if _worker_id(config) is not None:
        return  # the controller prints it, once every worker has handed its figures over
    for handed in sorted(OUTPUT.glob("ledger-*.json")):
        ledger.merge(json.loads(handed.read_text()))
        handed.unlink()
    figures = ledger.figures()
    if not figures:
        return
    terminalreporter.section("reliability summary")
    for guarantee, counts in figures.items():
        terminalreporter.write_line(f"{guarantee:>21}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "reliability-summary.json").write_text(json.dumps(figures, indent=2) + "\n")
