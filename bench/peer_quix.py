"""2. The peer: the same filter job written with Quix Streams, as its documentation suggests.

Objections live in Quix's own state store (the right side of `join_asof`, fed from
`objections`); each post looks up its user's latest objection as of its timestamp, is
validated like Consentry validates, and is forwarded to the output topic when eligible.

Runs in its own virtualenv (.venv-peer): quixstreams 3.28.1 pins pydantic < 2.14 and
confluent-kafka < 2.13, older than the versions Consentry is pinned to. Imports nothing
from Consentry.

    .venv-peer/bin/python bench/peer_quix.py BOOTSTRAP POSTS OBJECTIONS OUT EXPECTED STATE_DIR
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone

from quixstreams import Application

REQUIRED = ("post_id", "user_id", "created_at", "visibility", "text")


def main(bootstrap: str, posts_topic: str, objections_topic: str, out_topic: str, expected: int, state_dir: str) -> dict:
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"{posts_topic}-quix",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,  # no changelog: the fastest Quix can be (and Tansu needs no extra topics)
        auto_create_topics=True,
        loglevel="WARNING",
        consumer_extra_config={"fetch.wait.max.ms": 50, "session.timeout.ms": 6000},
        producer_extra_config={"linger.ms": 5, "enable.idempotence": False},
    )
    posts = app.topic(posts_topic, key_deserializer="str", value_deserializer="json")
    objections = app.topic(objections_topic, key_deserializer="str", value_deserializer="json")
    out = app.topic(out_topic, key_serializer="str", value_serializer="json")
    first: list[float] = []

    def valid(post: dict) -> bool:
        if not first:
            first.append(time.perf_counter())
        if type(post) is not dict or any(type(post.get(f)) is not str for f in REQUIRED):
            return False
        try:
            datetime.fromisoformat(post["created_at"])
        except ValueError:
            return False
        return post.get("author_is_minor") is False or post.get("author_is_minor") is None

    def merge(post: dict, objection: dict | None) -> dict:
        return {"post": post, "objected": objection is not None and objection.get("kind") == "object"}

    def to_training(item: dict) -> dict:
        post = item["post"]
        return {
            "type": "post", "post_id": post["post_id"], "user_id": post["user_id"], "created_at": post["created_at"],
            "text": post["text"], "lang": post.get("lang"), "country": post.get("country"),
            "ingested_at": datetime.now(timezone.utc).isoformat(),
        }

    sdf = app.dataframe(posts).filter(valid)
    sdf = sdf.join_asof(app.dataframe(objections), how="left", on_merge=merge)
    sdf = sdf.filter(lambda item: not item["objected"] and item["post"]["visibility"] == "public")
    sdf = sdf.apply(to_training)
    sdf.to_topic(out)
    # `count` stops the app after that many outputs, once they are produced and committed.
    app.run(count=expected, timeout=120, collect=False)
    finished = time.perf_counter()
    seconds = finished - first[0] if first else float("nan")
    return {"forwarded": expected, "seconds": seconds}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    bootstrap, posts_topic, objections_topic, out_topic, expected, state_dir = sys.argv[1:7]
    print(json.dumps(main(bootstrap, posts_topic, objections_topic, out_topic, int(expected), state_dir)), flush=True)
