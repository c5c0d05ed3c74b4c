"""Services never log post text or tokens: grep their captured logs for what the test sent."""

from __future__ import annotations

from tests.support.system import System


def assert_logs_clean(system: System, texts: list[str], tokens: list[str], services: tuple[str, ...] | None = None) -> None:
    """`services`: instance names ("consent-2"...); None: every worker that wrote a log."""
    names = services if services is not None else sorted(path.stem for path in system.log_dir.glob("*.log"))
    for service in names:
        log = system.log(service)
        for secret in texts:
            assert secret not in log, f"{service} logged post text"
        for token in tokens:
            assert token not in log, f"{service} logged a token"
            signature = token.rsplit(".", 1)[-1]
            assert signature not in log, f"{service} logged a token's signature"
