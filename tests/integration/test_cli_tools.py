"""`consentry produce`, `consentry tail` and `consentry --version` against the embedded broker,
as processes, as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from consentry import __version__
from consentry.kafka import ensure_topics
from consentry.partitioning import home_partition
from consentry.settings import CommonSettings
from consentry.wire import parse_post, unframe
from tests.support.kafka import produce, read_topic
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]


def post(post_id: str, user: str, **changes: object) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": "2025-05-27T10:00:00Z", "visibility": "public", "text": f"text of {post_id}", **changes}


@pytest.fixture
def env(broker: tuple[str, str]) -> dict[str, str]:
    bootstrap, flavor = broker
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=prefix, partitions=2)
    asyncio.run(ensure_topics(settings))
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CONSENTRY_BROKER_FLAVOR": flavor, "CONSENTRY_TOPIC_PREFIX": prefix,
            "CONSENTRY_PARTITIONS": "2", "COLUMNS": "200"}


def consentry(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consentry_cli", *args], env=env, input=stdin.decode() if stdin else None, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_version() -> None:
    done = consentry(dict(os.environ), "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"consentry {__version__}"


def test_log_ref_prints_the_pseudonym_the_services_log_for_a_user() -> None:
    from consentry.logs import user_ref

    done = consentry(dict(os.environ), "log-ref", "u-42")
    assert done.returncode == 0 and done.stdout.strip() == user_ref("u-42") and "u-42" not in done.stdout


def test_produce_sends_checked_json_lines_keyed_by_user_and_lists_what_it_skipped(env: dict[str, str], tmp_path: Path) -> None:
    lines = [orjson.dumps(post(f"p-{n}", f"user-{n % 3}")) for n in range(7)]
    file = tmp_path / "posts.jsonl"
    file.write_bytes(b"\n".join([*lines[:3], b"", b"not json", orjson.dumps(post("p-bad", "user-1", visibility="everyone")), *lines[3:]]) + b"\n")

    done = consentry(env, "produce", "posts", str(file))

    assert done.returncode == 1, done.stderr  # some lines were skipped: say so to scripts
    assert "10 lines: sent 7, skipped 2" in done.stderr
    assert "line 5: invalid_json" in done.stderr and "line 6: bad_value: 'visibility' must be one of public, friends, private" in done.stderr
    records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["CONSENTRY_TOPIC_PREFIX"] + "posts")
    assert sorted(r.value for r in records) == sorted(lines)
    for record in records:
        parsed = parse_post(record.value, record.key)
        assert record.key == parsed.user_id.encode()  # type: ignore[union-attr]
        assert record.partition == home_partition(parsed.user_id, 2)  # type: ignore[union-attr]


def test_produce_from_stdin_unchecked_and_framed(env: dict[str, str]) -> None:
    lines = [orjson.dumps(post("p-1", "u-1")), b'{"post_id": "hostile", "user_id": "u-2"}']

    done = consentry(env, "produce", "posts", "--no-check", "--schema-id", "7", stdin=b"\n".join(lines) + b"\n")

    assert done.returncode == 0, done.stderr
    assert "2 lines: sent 2, skipped 0" in done.stderr
    records = read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["CONSENTRY_TOPIC_PREFIX"] + "posts")
    assert sorted(unframe(r.value) for r in records) == sorted(lines)  # type: ignore[type-var]
    assert all(r.value[:5] == b"\x00\x00\x00\x00\x07" for r in records)


def test_tail_from_the_beginning_pretty_raw_and_filtered_by_user(env: dict[str, str]) -> None:
    topic = env["CONSENTRY_TOPIC_PREFIX"] + "posts"
    values = [orjson.dumps(post(f"p-{n}", "alice" if n % 2 else "bob")) for n in range(4)]
    asyncio.run(produce(env["KAFKA_BOOTSTRAP_SERVERS"], topic, [(b"alice" if n % 2 else b"bob", v) for n, v in enumerate(values)]))

    raw = consentry(env, "tail", "posts", "--from-beginning", "--raw", "--user", "alice", "--max", "2")
    assert raw.returncode == 0, raw.stderr
    assert sorted(raw.stdout.splitlines()) == sorted(v.decode() for v in values[1::2])
    assert "2 records" in raw.stderr

    pretty = consentry(env, "tail", "posts", "--from-beginning", "--max", "4")
    assert pretty.returncode == 0, pretty.stderr
    assert pretty.stdout.count(f"{topic}[") == 4 and "key=bob" in pretty.stdout and '  "post_id": "p-0",' in pretty.stdout


def test_tail_from_the_end_shows_only_what_arrives(env: dict[str, str]) -> None:
    topic = env["CONSENTRY_TOPIC_PREFIX"] + "posts"
    old = [(b"u-old", orjson.dumps(post("old", "u-old")))]
    asyncio.run(produce(env["KAFKA_BOOTSTRAP_SERVERS"], topic, old))
    tail = subprocess.Popen(
        [sys.executable, "-m", "consentry_cli", "tail", "posts", "--raw", "--max", "1"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert tail.stderr is not None
        started = eventually(lambda: tail.stderr.readline(), timeout=60, what="tail positioned at the end")  # type: ignore[union-attr]
        assert "from the end" in started
        new = orjson.dumps(post("new", "u-new"))
        asyncio.run(produce(env["KAFKA_BOOTSTRAP_SERVERS"], topic, [(b"u-new", new)]))
        out, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert out.splitlines() == [new.decode()]


def test_tail_of_a_topic_that_does_not_exist(env: dict[str, str]) -> None:
    done = consentry(env, "tail", "no-such-topic", "--idle", "1")
    assert done.returncode == 2 and "no topic" in done.stderr


def test_status_says_when_the_consent_service_does_not_answer(tmp_path: Path) -> None:
    from tests.support.ports import free_port

    env = {**os.environ, "CONSENTRY_CONSENT_URL": f"http://127.0.0.1:{free_port()}", "CONSENTRY_DATA_DIR": str(tmp_path)}
    done = consentry(env, "status", "u-42")
    assert done.returncode == 1 and "did not answer" in done.stderr

    refused = consentry(env, "status", " u-42")
    assert refused.returncode == 2 and "leading or trailing whitespace" in refused.stderr


def test_status_store_only_counts_a_users_rows_in_a_real_delta_table(tmp_path: Path) -> None:
    from services.sink.store import DeltaTrainingStore

    uri = tmp_path / "training"
    row = {"created_at": "2025-05-27T10:00:00Z", "text": "never shown", "lang": None, "country": None, "ingested_at": "2025-05-27T10:00:01Z"}
    DeltaTrainingStore(str(uri)).append([{**row, "post_id": "a", "user_id": "o'brien"}, {**row, "post_id": "b", "user_id": "o'brien"}, {**row, "post_id": "c", "user_id": "x"}])
    env = {**os.environ, "TRAINING_STORE_URI": str(uri), "CONSENTRY_PARTITIONS": "8"}

    done = consentry(env, "status", "o'brien", "--store-only")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"home partition: {home_partition('o' + chr(39) + 'brien', 8)} of 8", f"rows in the training store ({uri}): 2"]
    assert "never shown" not in done.stdout


def test_migrate_store_rewrites_an_unpartitioned_table_into_the_bucket_layout(tmp_path: Path) -> None:
    """`consentry migrate-store`, as docs/operations.md tells an operator to run it."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from services.sink.store import SCHEMA, DeltaTrainingStore

    uri = str(tmp_path / "training")
    old = pa.schema([f for f in SCHEMA if f.name not in ("bucket", "cluster")])  # the release before buckets
    write_deltalake(uri, pa.table({"post_id": ["p1"], "user_id": ["alice"], "created_at": pa.array([1], pa.timestamp("us", tz="UTC")), "text": ["t"],
                                   "lang": [None], "country": [None], "ingested_at": pa.array([2], pa.timestamp("us", tz="UTC"))}, schema=old))
    from typer.testing import CliRunner

    from consentry_cli.cli import app

    result = CliRunner().invoke(app, ["migrate-store", "--buckets", "8"], env={"TRAINING_STORE_URI": uri})  # in-process: seconds saved
    assert result.exit_code == 0, result.output
    assert "the bucket layout: 1 rows" in " ".join(result.output.split())  # the console's lines, unwrapped
    assert DeltaTable(uri).metadata().partition_columns == ["bucket"]
    assert DeltaTrainingStore(uri).buckets == 8
