"""consentry.client against the embedded broker and a real gateway: the README's worked example,
run as written, and a file of notices imported through the gateway."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from consentry.client import import_notices
from consentry.kafka import ensure_topics
from consentry.keys import KeySet
from consentry.links import verify_link_token
from consentry.partitioning import home_partition
from consentry.settings import CommonSettings
from consentry.wire import parse_notice, parse_post
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import admin_token
from tests.support.kafka import read_topic

ROOT = Path(__file__).resolve().parents[2]
LINK_KEYS = "links-readme:" + "5e" * 32


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-test:client:start -->")[1].split("<!-- readme-test:client:end -->")[0]
    return "\n".join(line for line in block.strip().splitlines() if not line.startswith("```"))


def test_the_readmes_client_example_publishes_a_checked_post_and_a_notice(broker: tuple[str, str]) -> None:
    bootstrap, flavor = broker
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=prefix, partitions=2)
    asyncio.run(ensure_topics(settings))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CONSENTRY_TOPIC_PREFIX": prefix, "CONSENTRY_LINK_KEYS": LINK_KEYS}

    run = subprocess.run([sys.executable, "-c", readme_example()], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["refused: bad_timestamp", "notice sent with https://consent.example.com/object"]
    [post] = read_topic(bootstrap, settings.topics.posts)
    assert post.key == b"u-42" and parse_post(post.value, post.key).post_id == "p-1"  # type: ignore[union-attr]
    assert post.partition == home_partition("u-42", 2)  # the client's partitioner: the user's home partition
    [notice] = read_topic(bootstrap, settings.topics.notices)
    assert notice.key == b"u-42" and parse_notice(notice.value).notice_id == "n-1"  # type: ignore[union-attr]


def test_the_readmes_link_is_one_the_gateway_verifies() -> None:
    from consentry.client import objection_link

    link = objection_link(LINK_KEYS, "https://consent.example.com", "u-42", channel="app")
    token = link.split("token=")[1]

    claims = verify_link_token(KeySet.parse(LINK_KEYS, "CONSENTRY_LINK_KEYS"), token)
    assert (claims.user_id, claims.channel) == ("u-42", "app")


def test_a_file_of_notices_is_imported_through_the_gateway(start_gateway: StartGateway, tmp_path: Path) -> None:
    url, settings = start_gateway()
    asyncio.run(ensure_topics(settings, [s for s in settings.topics.specs() if s.name == settings.topics.notices]))
    lines = [
        orjson.dumps({"notice_id": f"old-{n}", "user_id": f"u-{n}", "notice_version": "2024-01", "channel": "email", "sent_at": "2024-01-02T03:04:05Z", "country": "FR"})
        for n in range(3)
    ]
    file = tmp_path / "notices.jsonl"
    file.write_bytes(b"\n".join([*lines, b'{"notice_id": "broken"']) + b"\n")

    report = import_notices(url, admin_token("operator"), file)

    assert (report["lines"], report["accepted"], report["rejected"]) == (4, 3, 1)
    assert sorted(orjson.loads(r.value)["notice_id"] for r in read_topic(settings.bootstrap_servers, settings.topics.notices)) == ["old-0", "old-1", "old-2"]
    again = import_notices(url, admin_token("operator"), [orjson.loads(line) for line in lines])
    assert (again["lines"], again["accepted"], again["rejected"]) == (3, 3, 0)  # again: the consent service records a notice_id once
