"""An event the consent service cannot apply goes to its dead-letter topic, with its reason and
where it was read, and is counted (issue 12): never only a log line."""

from __future__ import annotations

import orjson
import pytest

from consentry.partitioning import home_partition
from consentry.scrape import total
from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

NUL_REASON = {
    "objection_id": "o-nul",
    "user_id": "dead-letter-user",
    "kind": "object",
    "received_at": "2026-01-02T03:04:05Z",
    "channel": "web",
    "reason": "before\x00after",
}


def test_an_objection_the_consent_service_refuses_is_a_dead_letter(system: System) -> None:
    system.create_topics()
    system.start("consent")
    user = NUL_REASON["user_id"]
    home = home_partition(user, system.partitions)
    refused = orjson.dumps(NUL_REASON)
    fine = orjson.dumps({**NUL_REASON, "objection_id": "o-fine", "reason": "before after"})

    system.publish([(user.encode(), refused), (user.encode(), fine)], topic=system.topics.objections, partition=home)

    letters = eventually(lambda: system.read(system.topics.consent_dead_letters), timeout=60, what="a dead letter")
    [letter] = letters
    body = orjson.loads(letter.value)
    assert letter.key == user.encode()
    assert body["reason_code"] == "null_byte" and "'reason' contains a NUL character" in body["reason"]
    assert (body["topic"], body["partition"], body["offset"]) == (system.topics.objections, home, 0)
    assert orjson.loads(body["value"]) == NUL_REASON and body["value_truncated"] is False
    metrics = system.metrics("consent")
    assert total(metrics, "consentry_consent_dead_letters_total", topic="objections", reason="null_byte") == 1

    # The worker carries on: the next event of the same user is applied.
    def applied() -> bool:
        rows = [r for r in system.read(system.topics.consent_state) if r.key == user.encode()]
        return bool(rows) and b"o-fine" in rows[-1].value and b"o-nul" not in rows[-1].value

    eventually(applied, timeout=60, what="the valid objection applied")
