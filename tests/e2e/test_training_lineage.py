"""Training-run lineage end to end: trainers read the table through the reader API
(consentry.training, `consentry snapshot`), and a later objection names the runs that read the
person's posts: on the purge receipt, as a count in their status, and per run for operators."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from consentry_cli.cli import app

from consentry.timeutil import format_rfc3339, now_us
from consentry.training import open_snapshot
from consentry.wire import parse_receipt
from tests.conftest import running_system
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def readme_reader_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-test:reader:start -->")[1].split("<!-- readme-test:reader:end -->")[0]
    return "\n".join(line for line in block.splitlines() if not line.startswith("```"))


def post(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": f"text of {post_id}"}


def stored_ids(system: System) -> list[str]:
    return sorted(row["post_id"] for row in system.training_rows())


def run_users(system: System, run_id: str) -> list[str]:
    response = httpx.get(
        f"{system.gateway_url}/v1/admin/runs/{run_id}", headers={"Authorization": f"Bearer {system.token('ops', admin=True)}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return [u["user_id"] for u in response.json()["users"]]


def purged_receipt(system: System, user: str) -> dict:
    [receipt] = [r for r in system.read(system.topics.receipts) if r.key == user.encode() and orjson.loads(r.value)["type"] == "purged"]
    return orjson.loads(receipt.value)


def trainer_env(system: System) -> dict[str, str]:
    """What a trainer's environment says: where the broker and the table are."""
    names = ("KAFKA_BOOTSTRAP_SERVERS", "CONSENTRY_BROKER_FLAVOR", "CONSENTRY_TOPIC_PREFIX", "CONSENTRY_DATA_DIR")
    return {name: system.env[name] for name in names}


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """With the audit writer: a person's evidence names the runs that read their posts."""
    yield from running_system(broker, tmp_path, request, audit=True)


def test_a_run_that_read_before_a_purge_is_reported_for_that_user_and_one_that_read_after_is_not(
    system: System, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    system.create_topics()
    system.start()
    uri = str(system.data_dir / "training")
    system.publish_posts([post("alice-1", "alice"), post("alice-2", "alice"), post("bob-1", "bob"), post("carol-1", "carol")])
    eventually(lambda: stored_ids(system) == ["alice-1", "alice-2", "bob-1", "carol-1"], timeout=60, what="posts stored")

    # team-a/run-before reads the table: the version it is given is exactly what it reads.
    before = open_snapshot("team-a/run-before", store_uri=uri, settings=system.settings)
    assert sorted(before.to_pyarrow_table(["post_id"]).column("post_id").to_pylist()) == ["alice-1", "alice-2", "bob-1", "carol-1"]
    assert before.rows == 4
    assert DeltaTable(uri, version=before.version).to_pyarrow_table().num_rows == 4

    # Alice objects: her purge names team-a/run-before.
    system.object("alice")
    alice = system.wait_status("alice", "purged")
    assert alice["trained_on_by"] == 1
    receipt = parse_receipt(orjson.dumps(purged_receipt(system, "alice")))
    assert receipt.trained_on_runs == ("team-a/run-before",)
    # The receipt names the delete's Delta version (the audit trail's proof): Alice's rows are in
    # the version before it and gone from it.
    assert receipt.version is not None and receipt.version > before.version
    holds_alice = lambda v: "alice" in DeltaTable(uri, version=v).to_pyarrow_table().column("user_id").to_pylist()  # noqa: E731
    assert holds_alice(receipt.version - 1) and not holds_alice(receipt.version)

    # run-after reads once Alice's posts are gone (as another language would: the CLI's files).
    done = CliRunner().invoke(app, ["snapshot", "run-after"], env=trainer_env(system))
    assert done.exit_code == 0, done.output
    after = orjson.loads(done.stdout)
    assert after["version"] > before.version
    files = pq.ParquetDataset(after["files"]).read(columns=["post_id"]).column("post_id").to_pylist()
    assert sorted(files) == ["bob-1", "carol-1"] == sorted(DeltaTable(uri, version=after["version"]).to_pyarrow_table().column("post_id").to_pylist())

    # Bob objects after both runs read his post: both are named; Alice stays with one.
    system.object("bob")
    assert system.wait_status("bob", "purged")["trained_on_by"] == 2
    assert purged_receipt(system, "bob")["trained_on_runs"] == ["run-after", "team-a/run-before"]
    assert system.status("alice")["trained_on_by"] == 1

    # Operators: per run, the objected users it included (carol never objected).
    assert run_users(system, "team-a/run-before") == ["alice", "bob"]
    assert run_users(system, "run-after") == ["bob"]
    assert run_users(system, "run-never") == []

    # Alice's evidence (the audit trail): her purge with the delete's Delta version as proof,
    # and the run that had read her posts.
    def alice_evidence() -> dict:
        response = httpx.get(f"{system.gateway_url}/v1/admin/audit/alice", headers={"Authorization": f"Bearer {system.token('operator', admin=True)}"}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [s["fact"] for s in body["steps"]][:3] == ["received", "enforced", "purged"], body
        return body

    evidence = eventually(alice_evidence, timeout=60, what="alice's purge in the audit trail")
    purged = evidence["steps"][2]
    assert purged["proof"]["version"] == receipt.version and purged["proof"]["rows_purged"] == 2, purged
    assert [run["run_id"] for run in evidence["trained_on_runs"]] == ["team-a/run-before"], evidence

    # The README's reader example, as a trainer runs it (its settings from the environment).
    for name, value in trainer_env(system).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    exec(readme_reader_example(), {})
    assert capsys.readouterr().out.strip() == f"run-2026-12-01 read version {DeltaTable(uri).version()} with 1 posts"
    assert run_users(system, "run-2026-12-01") == []
