"""The training store on object storage: `s3://` against a real S3 API server on localhost
(moto's server mode, tests/support/s3.py), with the storage options production passes
(endpoint, keys, region, `conditional_put=etag`). What a purge and the next vacuum leave in
the bucket is read back object by object, as raw bytes and decoded."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from consentry_cli.cli import app
from services.sink.store import DeltaTrainingStore
from tests.support.residue import _strings
from tests.support.s3 import S3Server
from tests.support.sink import RunningSink, create_sink_topics, publish, post_message, purge_message, sink_settings, user_in
from tests.support.wait import eventually_async

STREAM = "consentry-sink:training.posts:0"


def rows(user: str, n: int, start: int = 0) -> list[dict]:
    return [
        {"post_id": f"{user}-post-{i}", "user_id": user, "created_at": "2025-05-27T10:00:00Z", "text": f"private words of {user} number {i}",
         "lang": "fr", "country": "FR", "ingested_at": "2025-05-27T10:00:01Z"}
        for i in range(start, start + n)
    ]


def needles(user: str, n: int) -> set[str]:
    return {user} | {f"{user}-post-{i}" for i in range(n)} | {f"private words of {user} number {i}" for i in range(n)}


def bucket_residue(s3: S3Server, bucket: str, needles: set[str]) -> list[str]:
    """Where any needle is left in the bucket: raw bytes of every object, and the decoded
    strings of every Parquet object (pages are compressed)."""
    hits = []
    for key, data in s3.objects(bucket).items():
        hits += [f"{key}: {n} (raw bytes)" for n in needles if n.encode() in data]
        if key.endswith(".parquet"):
            text = "\n".join(_strings(pq.read_table(io.BytesIO(data)).to_pylist()))
            hits += [f"{key}: {n} (decoded)" for n in needles if n in text]
    return hits


def consentry_vacuum(uri: str, options: dict[str, str]) -> str:
    """`consentry vacuum` with TRAINING_STORE_URI and CONSENTRY_STORE_OPTIONS (JSON), as deployed
    (in-process: a new interpreter would cost seconds)."""
    result = CliRunner().invoke(app, ["vacuum"], env={"TRAINING_STORE_URI": uri, "CONSENTRY_STORE_OPTIONS": json.dumps(options), "COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def time_travel_residue(uri: str, options: dict[str, str], users: set[str]) -> list[str]:
    """Rows of `users` that any older version of the table still yields."""
    hits = []
    for version in range(DeltaTable(uri, storage_options=options).version() + 1):
        try:
            rows = DeltaTable(uri, version=version, storage_options=options).to_pyarrow_table(columns=["user_id"]).column("user_id").to_pylist()
        except Exception:
            continue  # that version's log or files are gone: it cannot be read at all
        hits += [f"version {version}: {u}" for u in set(rows) & users]
    return hits


def ids(store: DeltaTrainingStore) -> list[str]:
    return sorted(store.read(["post_id"]).column("post_id").to_pylist())


@pytest.fixture
def on_s3(s3: S3Server) -> tuple[S3Server, str, dict[str, str]]:
    bucket = s3.bucket()
    return s3, bucket, s3.storage_options()


def test_append_purge_and_vacuum_on_s3_leave_nothing_of_the_purged_user_in_the_bucket(on_s3) -> None:
    s3, bucket, options = on_s3
    uri = f"s3://{bucket}/training"
    store = DeltaTrainingStore(uri, options)
    store.append(rows("alice-aaa", 3) + rows("bob-bbb", 3), {STREAM: 6})
    store.append(rows("alice-aaa", 2, start=3) + rows("bob-bbb", 1, start=3), {STREAM: 9})
    assert bucket_residue(s3, bucket, {"alice-aaa"})  # the search finds her before
    assert sorted(store.purge(["alice-aaa"], {STREAM: 10})["alice-aaa"]) == [f"alice-aaa-post-{i}" for i in range(5)]

    printed = consentry_vacuum(uri, options)  # as an operator runs it: settings from the environment

    assert "2 files removed" in printed, printed
    assert bucket_residue(s3, bucket, needles("alice-aaa", 5)) == []
    assert time_travel_residue(uri, options, {"alice-aaa"}) == []
    reopened = DeltaTrainingStore(uri, options)
    assert ids(reopened) == [f"bob-bbb-post-{i}" for i in range(4)]
    assert reopened.applied_position(STREAM) == 10
    record = reopened.vacuum_record()  # written beside the table, in the bucket
    assert record is not None and record.runs == 1 and record.last_files_removed == 2
    live = {uri.rsplit("/", 1)[1] for uri in reopened._fresh().file_uris()}
    data_objects = {key.rsplit("/", 1)[1] for key in s3.objects(bucket, "training/") if key.endswith(".parquet") and "/_delta_log/" not in key}
    assert data_objects == live  # only the live file is left: the purged ones are gone from the bucket


def test_two_writers_commit_to_one_s3_table_at_once_and_nothing_is_lost(on_s3) -> None:
    """Two sink replicas (own table objects, own threads) appending and purging concurrently:
    delta-rs commits with a conditional put (`conditional_put=etag`), a writer that lost the
    race commits again on the new version; every append and every purge is in the table."""
    s3, bucket, options = on_s3
    uri = f"s3://{bucket}/training"
    DeltaTrainingStore(uri, options).append(rows("victim", 4), {"w0": 1, "w1": 1})
    writers = [DeltaTrainingStore(uri, options) for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait(10)
            for batch in range(6):
                writers[n].append(rows(f"w{n}", 3, start=3 * batch), {f"w{n}": batch + 2})
            if n == 0:
                writers[n].purge(["victim"])
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    table = DeltaTrainingStore(uri, options)
    assert ids(table) == sorted(f"w{n}-post-{i}" for n in range(2) for i in range(18))
    assert table.applied_position("w0") == 7 and table.applied_position("w1") == 7
    table.vacuum()
    assert bucket_residue(s3, bucket, needles("victim", 4)) == []


async def test_the_sink_on_s3_stores_posts_and_purges_through_its_settings(broker, tmp_path, on_s3) -> None:
    """The sink configured as in production: TRAINING_STORE_URI=s3://... and
    CONSENTRY_STORE_OPTIONS (endpoint, region, keys, conditional put)."""
    s3, bucket, options = on_s3
    bootstrap, flavor = broker
    settings = sink_settings(bootstrap, flavor, tmp_path, training_store_uri=f"s3://{bucket}/training", store_options=options)
    await create_sink_topics(settings)
    alice, bob = user_in(0, 2, "alice"), user_in(1, 2, "bob")
    async with RunningSink(settings):
        await publish(settings, (alice, post_message("a-1", alice)), (bob, post_message("b-1", bob)), (alice, post_message("a-2", alice)))
        store = DeltaTrainingStore(settings.store_uri, options)

        async def stored(expected: list[str]) -> bool:
            return await asyncio.to_thread(ids, store) == expected

        await eventually_async(lambda: stored(["a-1", "a-2", "b-1"]), timeout=60, what="posts on s3")
        await publish(settings, (alice, purge_message(alice)))
        await eventually_async(lambda: stored(["b-1"]), timeout=60, what="alice purged on s3")
    store.vacuum()
    assert bucket_residue(s3, bucket, {alice, "text of a-1", "text of a-2"}) == []
