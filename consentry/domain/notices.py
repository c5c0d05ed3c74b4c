"""The notice rule's pure parts: where a notice is required, when its grace period ends, and
which notice a person had been sent when they objected."""

from __future__ import annotations

from dataclasses import dataclass, replace

from consentry.domain.model import OBJECT, HistoryEntry, NoticeEntry, NoticeFacts

# The EU's 27 member states and the other EEA states (Iceland, Liechtenstein, Norway).
EU_EEA = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO".split()
)


@dataclass(frozen=True, slots=True)
class NoticePolicy:
    """Where a notice is required (ISO country codes) and how long after the first notice a
    user's posts may be used."""

    grace_us: int
    jurisdictions: frozenset[str]


def requires_notice(post_country: str | None, notices: NoticeFacts, policy: NoticePolicy) -> bool:
    """The post's country or any country a notice went to is in the jurisdictions; or nothing
    tells where the user is (no country, no notice): then fail closed."""
    if post_country is None and not notices.countries:
        return True
    return post_country in policy.jurisdictions or not notices.countries.isdisjoint(policy.jurisdictions)


def release_at_us(notices: NoticeFacts, policy: NoticePolicy) -> int | None:
    """When the grace period of the user's first notice ends; None while no notice was sent."""
    return None if notices.first_sent_us is None else notices.first_sent_us + policy.grace_us



def notice_seen_by(notices: tuple[NoticeEntry, ...], at_us: int) -> str | None:
    """The version of the latest notice sent at or before `at_us` (notices sorted by time)."""
    seen = None
    for notice in notices:
        if notice.sent_at_us > at_us:
            break
        seen = notice.notice_version
    return seen


def with_notice_versions(history: list[HistoryEntry], notices: tuple[NoticeEntry, ...]) -> list[HistoryEntry]:
    """An objection that named no notice version records the one the user had last been sent
    by then. Derived again on every change: a notice imported late may come before it."""
    out = []
    for entry in history:
        if entry.kind == OBJECT and (entry.notice_version is None or entry.notice_version_derived):
            seen = notice_seen_by(notices, entry.received_at_us)
            if seen != entry.notice_version:
                entry = replace(entry, notice_version=seen, notice_version_derived=seen is not None)
        out.append(entry)
    return out
