"""Notices already sent, imported in bulk: `POST /v1/admin/notices:import` over real HTTP and
`consentry import-notices FILE`, both onto the real `notices` topic, each notice in its
user's home partition with its original `sent_at`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import orjson
from typer.testing import CliRunner

from consentry.kafka import ensure_topics
from consentry.partitioning import home_partition
from consentry.settings import CommonSettings
from consentry_cli.cli import app
from tests.support.gateway import StartGateway
from tests.support.gateway_settings import admin_token, user_token
from tests.support.kafka import read_topic

IMPORT = "/v1/admin/notices:import"


def sent(notice_id: str, user: str, sent_at: str = "2025-03-01T08:00:00Z", **extra: object) -> bytes:
    return orjson.dumps(
        {"notice_id": notice_id, "user_id": user, "notice_version": "2025-03", "channel": "email", "sent_at": sent_at, "country": "FR", **extra}
    )


def create_notices_topic(settings: CommonSettings) -> None:
    asyncio.run(ensure_topics(settings, [s for s in settings.topics.specs() if s.name == settings.topics.notices]))


def test_operators_import_notices_and_every_line_is_accounted_for(start_gateway: StartGateway) -> None:
    url, settings = start_gateway()
    create_notices_topic(settings)
    body = b"\n".join(
        [
            sent("n-1", "alice"),
            sent("n-2", "bob", channel="in_app", country="DE"),
            b'{"notice_id": "n-3"',
            sent("n-1", "alice"),
            sent("n-4", "carol", channel="letter"),
        ]
    )
    person = {"Authorization": f"Bearer {user_token('alice')}"}
    assert httpx.post(f"{url}{IMPORT}", headers=person, content=body).status_code == 403

    admin = {"Authorization": f"Bearer {admin_token('operator')}", "Content-Type": "application/x-ndjson"}
    response = httpx.post(f"{url}{IMPORT}", headers=admin, content=body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["lines"], result["accepted"], result["duplicates"], result["rejected"]) == (5, 2, 1, 2)
    assert [(r["line"], r["reason"].split(":")[0]) for r in result["rejected_lines"]] == [(3, "invalid_json"), (5, "bad_value")]
    records = read_topic(settings.bootstrap_servers, settings.topics.notices)
    notices = {orjson.loads(r.value)["notice_id"]: (r, orjson.loads(r.value)) for r in records}
    assert sorted(notices) == ["n-1", "n-2"]
    record, bob = notices["n-2"]
    assert (bob["user_id"], bob["channel"], bob["country"], bob["sent_at"]) == ("bob", "in_app", "DE", "2025-03-01T08:00:00Z")
    assert record.key == b"bob" and record.partition == home_partition("bob", settings.partitions)


def test_consentry_import_notices_reads_a_file(broker: tuple[str, str], tmp_path: Path) -> None:
    bootstrap, flavor = broker
    prefix = f"n{uuid.uuid4().hex[:10]}-"
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, broker_flavor=flavor, topic_prefix=prefix, partitions=2)
    create_notices_topic(settings)
    path = tmp_path / "notices.jsonl"
    path.write_bytes(b"\n".join([sent("f-1", "dave"), b"not json", sent("f-2", "erin", sent_at="2099-01-01T00:00:00Z"), sent("f-3", "erin")]) + b"\n")

    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CONSENTRY_BROKER_FLAVOR": flavor, "CONSENTRY_TOPIC_PREFIX": prefix, "CONSENTRY_PARTITIONS": "2"}
    result = CliRunner().invoke(app, ["import-notices", str(path)], env=env)

    assert result.exit_code == 0, result.output
    assert "4 lines: accepted 2, duplicates skipped 0, rejected 2" in result.output
    assert "line 2: invalid_json" in result.output and "line 3: bad_timestamp: 'sent_at' is in the future" in result.output
    users = sorted(orjson.loads(r.value)["user_id"] for r in read_topic(bootstrap, settings.topics.notices))
    assert users == ["dave", "erin"]
