"""The consent service fails closed when a record it must send cannot be sent (issue 12): a
changelog record over the size limit stops the worker before the objection's offset is
committed, so the objection is applied once the worker restarts with room for it.

The embedded broker (Tansu 0.6.0) does not enforce a topic's `max.message.bytes`, so the
record is refused by the worker's own producer (`CONSENTRY_CONSENT_MAX_RECORD_BYTES`, the
producer's `max.request.size`): a real refusal of the real record, before it leaves. On Apache
Kafka the broker refuses it too (RecordTooLargeException, through the send's future); that path,
and a missing ACL, are shown on faust in tests/unit/test_patches.py."""

from __future__ import annotations

import pytest

from tests.support.system import System
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

LONG_REASON = "\U0001f600" * 2000  # 2000 code points (the limit), 8000 bytes of UTF-8


def changelog_keys(system: System) -> set[bytes]:
    return {record.key for record in system.read(system.topics.consent_state)}


def test_a_changelog_record_that_cannot_be_sent_stops_consent_before_the_commit(system: System) -> None:
    system.create_topics()
    small = {"CONSENTRY_CONSENT_MAX_RECORD_BYTES": "4096"}
    system.start("ingest", "sink", "gateway")
    system.start("consent", env=small)
    system.object("fits")  # a small row fits: the worker runs normally
    system.wait_status("fits", "purged")  # (enforced, then purged at once: the status passes `enforced` quickly)

    system.object("too-big", reason=LONG_REASON)  # 202: the gateway accepted it; its row is ~8 KB

    code = system.wait_exit("consent", timeout=60)
    assert code != 0, system.log("consent")[-3000:]
    assert "cannot be sent" in system.log("consent")
    assert b"too-big" not in changelog_keys(system)

    system.start("consent")  # room for the record now: the objection is read again, and applied
    eventually(lambda: b"too-big" in changelog_keys(system), timeout=60, what="the row in the changelog")
    doc = system.wait_status("too-big", "purged")  # ingest read it from the changelog; the sink purged
    assert doc["history"][0]["reason"] == LONG_REASON


def objection_record(objection_id: str, user: str) -> tuple[bytes, bytes]:
    from consentry.domain.model import ObjectionEvent
    from consentry.timeutil import now_us
    from consentry.wire import encode_objection

    return user.encode(), encode_objection(ObjectionEvent(objection_id, user, "object", now_us(), "api"))


def test_an_event_the_agent_fails_on_stops_consent_before_the_commit(system: System) -> None:
    """A bug, not input (here: an unreadable row in the consent table). faust answers an agent's
    exception by committing and restarting the agent; the consent worker must stop instead, so
    the event is applied once the cause is fixed."""
    from consentry.partitioning import home_partition

    system.create_topics()
    user = "broken-row"
    home = home_partition(user, system.partitions)
    system.publish([(user.encode(), b'{"user_id": "broken-row"}')], topic=system.topics.consent_state, partition=home)
    system.start("consent")

    system.publish([objection_record("o-broken", user)], topic=system.topics.objections, partition=home)

    code = system.wait_exit("consent", timeout=60)
    assert code != 0, system.log("consent")[-3000:]

    system.publish([(user.encode(), None)], topic=system.topics.consent_state, partition=home)  # the operator's fix
    system.start("consent")

    def applied() -> bool:
        rows = [r for r in system.read(system.topics.consent_state) if r.key == user.encode() and r.value]
        return bool(rows) and b"o-broken" in rows[-1].value

    eventually(applied, timeout=60, what="the objection applied after the restart")
