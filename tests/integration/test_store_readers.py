"""Trainers read the training store with their own tools: polars (its Delta reader) and
duckdb (over deltalake's Arrow dataset: duckdb's own delta extension is a download, and the
tests run offline). Each must get exactly the rows delta-rs gets, on disk and on S3, also
after a purge (the latest version: no purged row) and after its vacuum."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from services.sink.store import DeltaTrainingStore
from tests.support.s3 import S3Server

COLUMNS = ["post_id", "user_id", "created_at", "text", "lang", "country", "ingested_at"]


def rows(user: str, n: int) -> list[dict]:
    return [
        {"post_id": f"{user}-{i}", "user_id": user, "created_at": f"2025-05-27T10:00:0{i}Z", "text": f"words of {user} {i} é€",
         "lang": "fr" if i % 2 else None, "country": "FR", "ingested_at": "2025-05-27T10:01:00Z"}
        for i in range(n)
    ]


def delta_rs(uri: str, options: dict[str, str] | None) -> list[tuple]:
    table = DeltaTable(uri, storage_options=options).to_pyarrow_table(columns=COLUMNS)
    return sorted(tuple(r.values()) for r in table.to_pylist())


def with_polars(uri: str, options: dict[str, str] | None) -> list[tuple]:
    frame = pl.read_delta(uri, storage_options=options, columns=COLUMNS)
    return sorted(frame.rows())


def with_duckdb(uri: str, options: dict[str, str] | None) -> list[tuple]:
    dataset = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()  # the latest version
    with duckdb.connect() as db:
        db.register("training", dataset)
        result = db.sql(f"SELECT {', '.join(COLUMNS)} FROM training").to_arrow_table()
    return sorted(tuple(r.values()) for r in pa.table(result).to_pylist())


@pytest.fixture(params=["disk", "s3"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str] | None]:
    if request.param == "disk":
        return str(tmp_path / "training"), None
    s3: S3Server = request.getfixturevalue("s3")
    return f"s3://{s3.bucket()}/training", s3.storage_options()


def test_polars_and_duckdb_read_exactly_what_delta_rs_reads_before_and_after_a_purge(table) -> None:
    uri, options = table
    store = DeltaTrainingStore(uri, options)
    store.append(rows("alice", 3) + rows("bob", 2))
    store.append(rows("carol", 4))
    readers = (with_polars, with_duckdb)
    expected = delta_rs(uri, options)
    assert len(expected) == 9
    for reader in readers:
        assert reader(uri, options) == expected, reader.__name__

    store.purge(["alice", "carol"])
    after = delta_rs(uri, options)
    assert sorted(r[0] for r in after) == ["bob-0", "bob-1"]
    for reader in readers:
        assert reader(uri, options) == after, reader.__name__
    store.vacuum()
    for reader in readers:
        assert reader(uri, options) == after, reader.__name__
