"""The sink after a crash between its table commit and its offset commit.

The same story runs on both stores (in memory, and a Delta table on disk): a batch holds a
user's post and, after it, that user's purge marker. The process dies after the commit but
before the consumer group's offset commit, so the batch is read again, possibly cut at
another place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from consentry.domain import purge as purge_planning
from consentry.wire import parse_training_message
from services.sink.store import DeltaTrainingStore, MemoryTrainingStore, TrainingStore
from services.sink.writer import IdempotentWriter


def plan_batch(values: list[bytes]) -> purge_planning.Plan:
    """The sink's planning of raw training.posts values: parse each, then plan."""
    return purge_planning.plan_batch([parse_training_message(v) for v in values])

STREAM = "consentry-sink:training.posts:0"


def post(post_id: str, user: str) -> bytes:
    return orjson.dumps({"type": "post", "post_id": post_id, "user_id": user, "created_at": "2025-05-27T10:00:00Z",
                         "text": f"text of {post_id}", "lang": None, "country": None, "ingested_at": "2025-05-27T10:00:01Z"})


def purge(user: str) -> bytes:
    return orjson.dumps({"type": "purge", "user_id": user, "objection_ids": [f"o-{user}"], "marked_at": "2025-05-27T10:00:02Z"})


@pytest.fixture(params=["memory", "delta"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """A function that gives the store as a restarted sink would find it."""
    memory = MemoryTrainingStore()

    def open_store() -> TrainingStore:
        return memory if request.param == "memory" else DeltaTrainingStore(str(tmp_path / "training"))

    yield open_store


def stored(store: TrainingStore) -> list[str]:
    return sorted(store.read(["post_id"]).column("post_id").to_pylist())


# Offsets 0..4 of one partition: bob's post, then alice's post, alice's purge marker, bob again.
STREAM_MESSAGES = [post("bob-1", "bob"), post("alice-1", "alice"), purge("alice"), post("bob-2", "bob"), post("bob-1", "bob")]


def test_the_batch_commit_records_how_far_the_stream_is_applied(reopen) -> None:
    writer = IdempotentWriter(reopen())
    writer.apply(plan_batch(STREAM_MESSAGES), {STREAM: 5})
    restarted = reopen()
    assert restarted.applied_position(STREAM) == 5
    assert stored(restarted) == ["bob-1", "bob-2"]


def test_a_batch_whose_purge_found_nothing_still_records_its_position(reopen) -> None:
    writer = IdempotentWriter(reopen())
    writer.apply(plan_batch([post("alice-1", "alice"), purge("alice")]), {STREAM: 2})
    assert stored(reopen()) == []
    assert reopen().applied_position(STREAM) == 2


def test_replaying_in_other_pieces_without_the_position_would_resurrect_a_purged_post(reopen) -> None:
    """Why the position is needed: the post_id index alone lets a replay cut before the
    marker put alice's post back (until the marker is applied again)."""
    IdempotentWriter(reopen()).apply(plan_batch(STREAM_MESSAGES), {STREAM: 5})
    replay = IdempotentWriter(reopen())  # index rebuilt from the table
    replay.apply(plan_batch(STREAM_MESSAGES[:2]))
    assert "alice-1" in stored(reopen())  # the hazard the worker avoids by skipping offsets < applied_position


def test_after_the_replay_of_the_unapplied_rest_every_post_is_stored_once(reopen) -> None:
    store = reopen()
    IdempotentWriter(store).apply(plan_batch(STREAM_MESSAGES[:3]), {STREAM: 3})
    restarted = reopen()
    applied = restarted.applied_position(STREAM)
    assert applied == 3
    # The worker hands the writer only offsets >= applied_position; the rest is re-confirmed.
    IdempotentWriter(restarted).apply(plan_batch(STREAM_MESSAGES[applied:]), {STREAM: 5})
    assert stored(reopen()) == ["bob-1", "bob-2"]
    assert reopen().applied_position(STREAM) == 5
