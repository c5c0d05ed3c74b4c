"""`consentry dead-letters`: lists what the consent service could not apply and writes each
event whole, ready to fix and re-drive with `consentry import` (docs/operations.md,
"ConsentryDeadLetters")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from consentry.domain.model import Invalid
from consentry.kafka import ensure_topics
from consentry.settings import CommonSettings
from consentry.timeutil import now_us
from consentry.wire import encode_rejection
from tests.support.kafka import produce, read_topic

REFUSED = {
    "objection_id": "o-nul",
    "user_id": "u-dead",
    "kind": "object",
    "received_at": "2026-01-02T03:04:05Z",
    "channel": "web",
    "reason": "before\x00after",
}


def consentry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consentry_cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_dead_letters_are_listed_written_whole_and_re_driven_after_a_fix(broker: tuple[str, str], tmp_path: Path) -> None:
    bootstrap, flavor = broker
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=prefix, partitions=2)
    topics = settings.topics
    asyncio.run(ensure_topics(settings))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CONSENTRY_BROKER_FLAVOR": flavor, "CONSENTRY_TOPIC_PREFIX": prefix, "CONSENTRY_PARTITIONS": "2"}
    # As the consent service leaves them: the event at objections[1]@0, its dead letter.
    refused = orjson.dumps(REFUSED)
    asyncio.run(produce(bootstrap, topics.objections, [(b"u-dead", refused)], partition=1))
    letter = encode_rejection(Invalid("null_byte", "'reason' contains a NUL character"), topics.objections, 1, 0, refused, now_us())
    asyncio.run(produce(bootstrap, topics.consent_dead_letters, [(b"u-dead", letter)]))

    listed = consentry(env, "dead-letters", "--write", str(tmp_path / "redrive"))

    assert listed.returncode == 0, listed.stderr
    assert f"{topics.objections}[1]@0  key=u-dead  null_byte: 'reason' contains a NUL character" in listed.stdout
    assert "1 dead letters" in listed.stderr
    written = tmp_path / "redrive" / "objections.jsonl"
    [line] = written.read_bytes().splitlines()
    assert orjson.loads(line) == REFUSED  # the whole event, on one line, its NUL escaped

    written.write_bytes(line.replace(b"\\u0000", b" ") + b"\n")  # the operator's fix
    imported = consentry(env, "import", str(written))

    assert imported.returncode == 0, imported.stderr
    assert "accepted 1" in imported.stderr
    events = [orjson.loads(r.value) for r in read_topic(bootstrap, topics.objections)]
    assert len(events) == 2 and REFUSED in events and {**REFUSED, "reason": "before after"} in events
