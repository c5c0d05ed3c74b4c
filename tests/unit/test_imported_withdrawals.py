"""An imported `withdraw` must not rewrite what a person's own objection covered
(services.gateway.api.admin.WithdrawalScreen), decided on the consent row as the consent
service holds it, with the domain's own transitions."""

from __future__ import annotations

import asyncio

import pytest

from consentry.domain.consent import apply_objection
from consentry.domain.model import ConsentState, ObjectionEvent
from services.gateway.api.admin import WithdrawalScreen
from services.gateway.auth import ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE, Principal
from services.gateway.consent_client import ConsentUnavailable
from services.gateway.receipts import ReceiptCache

HOUR = 3600 * 1_000_000
NOW = 1_750_000_000 * 1_000_000
OPERATOR = Principal("ops-1", frozenset({ADMIN_SCOPE, IMPORT_WITHDRAWALS_SCOPE}))


class Consent:
    """The consent client's one method, over rows built with the domain's transitions."""

    def __init__(self, *events: ObjectionEvent, down: bool = False) -> None:
        self.rows: dict[str, ConsentState] = {}
        self.down = down
        for event in events:
            self.rows[event.user_id] = apply_objection(self.rows.get(event.user_id), event, event.received_at_us)

    async def state(self, user_id: str) -> ConsentState | None:
        if self.down:
            raise ConsentUnavailable("consent service unreachable")
        return self.rows.get(user_id)


def event(objection_id: str, kind: str, at: int, channel: str = "import", user: str = "noa") -> ObjectionEvent:
    return ObjectionEvent(objection_id, user, kind, at, channel)


def screen(consent: Consent, admin: Principal = OPERATOR, override: bool = False) -> WithdrawalScreen:
    return WithdrawalScreen(admin, override, consent, ReceiptCache(), NOW)  # type: ignore[arg-type]


def decide(s: WithdrawalScreen, e: ObjectionEvent) -> str | None:
    refused = asyncio.run(s(e))
    return refused.code if refused is not None else None


LIVE = event("live-1", "object", NOW - 3 * HOUR, channel="web")


def test_a_withdrawal_dated_after_a_persons_own_objection_is_refused() -> None:
    s = screen(Consent(LIVE))
    assert decide(s, event("w-1", "withdraw", LIVE.received_at_us + 1_000_000)) == "after_live_objection"
    assert (s.accepted, s.refused) == (0, 1)


def test_an_imported_withdrawal_claiming_a_live_channel_cannot_jump_after_the_objection_either() -> None:
    # A non-`import` channel makes the consent service place it after the person's latest own event.
    assert decide(screen(Consent(LIVE)), event("w-1", "withdraw", NOW - 400 * 24 * HOUR, channel="api")) == "after_live_objection"


def test_history_before_the_persons_objection_or_of_imported_objections_is_importable() -> None:
    old = event("h-1", "object", NOW - 900 * 24 * HOUR)
    consent = Consent(old, LIVE)
    s = screen(consent)
    assert decide(s, event("w-0", "withdraw", NOW - 800 * 24 * HOUR)) is None  # ends the imported one, before the live one
    assert decide(s, event("w-2", "withdraw", NOW - 2 * 24 * HOUR, user="ana")) is None  # nobody's objection
    assert decide(s, event("o-9", "object", NOW - HOUR // 2)) is None  # objections never need the check
    assert s.accepted == 2


def test_a_withdrawal_that_changes_nothing_is_accepted_even_after_a_live_one() -> None:
    withdrawn = event("live-w", "withdraw", LIVE.received_at_us + HOUR, channel="web")
    assert decide(screen(Consent(LIVE, withdrawn)), event("w-3", "withdraw", LIVE.received_at_us + 2 * HOUR)) is None


def test_a_recent_withdrawal_is_refused_since_a_live_objection_may_not_be_applied_yet() -> None:
    assert decide(screen(Consent()), event("w-4", "withdraw", NOW - 60 * 1_000_000)) == "after_live_objection"


def test_the_override_accepts_and_lists_it_and_without_the_scope_no_withdrawal_is_imported() -> None:
    s = screen(Consent(LIVE), override=True)
    assert decide(s, event("w-1", "withdraw", LIVE.received_at_us + 1_000_000)) is None
    assert s.overridden == 1 and s.overrides[0]["objection_id"] == "w-1" and "live-1" in s.overrides[0]["reason"]
    without = screen(Consent(), admin=Principal("ops-2", frozenset({ADMIN_SCOPE})), override=True)
    assert decide(without, event("w-5", "withdraw", NOW - 900 * 24 * HOUR)) == "needs_scope"


def test_without_the_consent_state_nothing_is_decided() -> None:
    with pytest.raises(ConsentUnavailable):
        decide(screen(Consent(down=True)), event("w-6", "withdraw", NOW - 900 * 24 * HOUR))
