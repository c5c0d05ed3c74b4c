"""The whole system against a secured cluster (issue 14): the four services as processes, every
Kafka client of theirs (faust's in the consent service, ingest's and the sink's consumers and
producers, the gateway's publisher) reaching the embedded broker only through stunnel, with
mutual TLS or with SASL_SSL (SCRAM-SHA-512), configured by the CONSENTRY_KAFKA_* settings alone.
Before, no service could: they spoke PLAINTEXT to a TLS port and never became ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentry.timeutil import format_rfc3339, now_us
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def post(post_id: str, user: str) -> dict:
    return {"post_id": post_id, "user_id": user, "created_at": format_rfc3339(now_us()), "visibility": "public", "text": f"text of {post_id}"}


@pytest.fixture(params=["mutual-tls", "sasl-ssl"])
def secured_system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    if request.param == "mutual-tls":
        cluster = request.getfixturevalue("tls_cluster")
    else:
        cluster, terminator = request.getfixturevalue("sasl_cluster")  # shared by the session
        authenticated, refused = len(terminator.authenticated), len(terminator.refused)
    with System(cluster.bootstrap, "tansu", tmp_path, extra_env=cluster.env) as system:
        yield system
        if request.param == "sasl-ssl":  # every connection of the services authenticated with SCRAM, none refused
            assert set(terminator.authenticated[authenticated:]) == {("consentry-svc", "SCRAM-SHA-512")}
            assert terminator.refused[refused:] == []


def test_an_objection_is_applied_and_enforced_on_a_secured_cluster(secured_system: System) -> None:
    system = secured_system
    system.create_topics()
    system.start()

    system.publish_posts([post("alice-1", "alice"), post("bob-1", "bob"), post("bob-2", "bob")])
    stored = lambda: sorted(row["post_id"] for row in system.training_rows())  # noqa: E731
    eventually(lambda: stored() == ["alice-1", "bob-1", "bob-2"], timeout=90, what="posts stored")

    system.object("bob")  # gateway -> objections -> consent (faust) -> changelog -> ingest -> purge -> sink
    system.wait_status("bob", "purged", timeout=90)
    system.publish_posts([post("bob-3", "bob"), post("alice-2", "alice")])
    eventually(lambda: stored() == ["alice-1", "alice-2"], timeout=90, what="bob's posts purged and kept out")
