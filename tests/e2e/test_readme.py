"""The README's promises, run as written: `consentry up --demo` (what `make run` runs) brings
the whole system up with a flowing demo, and the README's curl session ends in `purged`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"posts in (?P<posts_in>\d+)\s+accepted (?P<accepted>\d+)\s+deferred (?P<deferred>\d+) \(waiting (?P<waiting>\d+), released (?P<released>\d+), "
    r"dropped (?P<deferred_dropped>\d+)\).*stored (?P<stored>\d+)\s+purged (?P<purged>\d+) rows / (?P<purges>\d+) objections"
)


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-test:start -->")[1].split("<!-- readme-test:end -->")[0]
    return [line for line in block.splitlines() if line and not line.startswith("```")]


def json_documents(text: str) -> list[dict]:
    """curl prints documents back to back, without newlines."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(text.strip()):
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


class Output:
    """Collects a process's output in a thread, so the test can poll it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def test_consentry_up_demo_and_the_readme_session(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("broker", "gateway", "consent", "ingest", "sink", "audit")}
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        PYTHONUNBUFFERED="1", COLUMNS="200", CONSENTRY_DATA_DIR=str(tmp_path / "var"), CONSENTRY_BROKER_PORT=str(ports["broker"]),
        GATEWAY_PORT=str(ports["gateway"]), CONSENTRY_CONSENT_PORT=str(ports["consent"]), CONSENTRY_INGEST_PORT=str(ports["ingest"]),
        CONSENTRY_SINK_PORT=str(ports["sink"]), CONSENTRY_AUDIT_PORT=str(ports["audit"]), CONSENTRY_CONSENT_URL=f"http://127.0.0.1:{ports['consent']}",
        CONSENTRY_SESSION_TIMEOUT_MS="3000", CONSENTRY_HEARTBEAT_INTERVAL_MS="500",
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "consentry_cli", "up", "--demo"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output = Output(up)
    try:
        eventually(lambda: "Consentry is up." in output.text, timeout=120, what=f"system up\n{output.text[-3000:]}")
        assert f"http://127.0.0.1:{ports['gateway']}/dashboard" in output.text

        # The README's session, as written, against this run's gateway.
        script = "\n".join(readme_block()).replace("127.0.0.1:8080", f"127.0.0.1:{ports['gateway']}")
        script = script.replace(".venv/bin/consentry", f"{sys.executable} -m consentry_cli")
        session = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert session.returncode == 0, session.stderr
        receipt, status = json_documents(session.stdout)
        assert status["user_id"] == "alice"
        assert receipt["user_id"] == "alice" and receipt["status"] == "received"

        status_command = script.splitlines()[-1]

        def alice_purged() -> bool:
            again = subprocess.run(["bash", "-c", script.splitlines()[0] + "\n" + status_command], cwd=ROOT, env=env, capture_output=True, text=True)
            return json_documents(again.stdout)[0]["status"] == "purged"

        eventually(alice_purged, timeout=60, what="alice purged")

        # `consentry up` runs the audit writer: alice's evidence holds her objection's whole path.
        def alice_chained() -> bool:
            shown = subprocess.run([sys.executable, "-m", "consentry_cli", "audit", "alice"], cwd=ROOT, env=env, capture_output=True, text=True)
            return shown.returncode == 0 and {"received", "enforced", "purged"} <= {s["fact"] for s in json.loads(shown.stdout)["steps"]}

        eventually(alice_chained, timeout=60, what="alice's audit chain")

        # The demo's summary shows posts accepted, deferred (the notice rule is on), dropped and purged.
        def demo_flowing() -> bool:
            for line in output.lines:
                match = SUMMARY.search(line)
                if match and int(match["accepted"]) > 0 and int(match["deferred"]) > 0 and int(match["purged"]) > 0 and "objected=" in line:
                    return True
            return False

        eventually(demo_flowing, timeout=90, what=f"demo summary with purges\n{output.text[-2000:]}")
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
    assert up.wait(timeout=60) == 0
    assert "stopped." in output.text
