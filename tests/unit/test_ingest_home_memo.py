"""Ingest's per-post home look-up (a plain dict memo, emptied beyond HOME_MEMO_USERS) routes
every post exactly as `home_partition` does, before and after the memo is emptied: the
worker's hot loop over in-memory records, a stand-in sender, no broker."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consentry.partitioning import home_partition
from services.ingest import worker as worker_module
from services.ingest.settings import IngestSettings
from services.ingest.worker import IngestWorker

PARTITIONS = 8


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes | None]] = []

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: object = ()) -> None:
        self.sent.append((topic, partition, key))


def _post(i: int, user: str) -> bytes:
    return orjson.dumps({
        "post_id": f"p-{i}", "user_id": user, "created_at": "2025-05-27T10:00:00Z",
        "visibility": "public", "text": "hi", "lang": "fr", "country": "US",
    })


@pytest.mark.parametrize("memo_users", [3, 100_000])
def test_home_memo_routes_like_home_partition(monkeypatch: pytest.MonkeyPatch, memo_users: int) -> None:
    monkeypatch.setattr(worker_module, "HOME_MEMO_USERS", memo_users)
    worker = IngestWorker(IngestSettings(partitions=PARTITIONS, notice_rule="off"))
    worker.sender = RecordingSender()  # type: ignore[assignment]
    worker.direct = True
    worker.rejected_partitions = PARTITIONS
    worker._owned_homes = {0, 1}  # the others' posts are re-keyed to posts-by-user
    worker.view.reset({0, 1})
    users = [f"user-{n}" for n in range(40)]
    posts_topic = worker.topics.posts
    for round_ in range(3):  # the memo fills, is emptied (memo_users=3) and fills again
        for p in range(PARTITIONS):
            records = [
                ConsumerRecord(posts_topic, p, i, 0, 0, u.encode(), _post(i, u), None, len(u), 0, ())
                for i, u in enumerate(users) if home_partition(u, PARTITIONS) == p or i % 5 == round_
            ]
            if records:
                worker._handle_posts({TopicPartition(posts_topic, p): records})
    assert worker.sender.sent  # type: ignore[attr-defined]
    for topic, partition, key in worker.sender.sent:  # type: ignore[attr-defined]
        assert partition == home_partition(key.decode(), PARTITIONS), (topic, partition, key)  # type: ignore[union-attr]
        assert topic in (worker.topics.training_posts, worker.topics.posts_by_user)
    assert len(worker._homes) <= max(memo_users, len(users)) + 1
