from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator

from consentry.domain.notices import EU_EEA, NoticePolicy
from consentry.domain.model import is_country_code
from consentry.settings import CommonSettings
from consentry.timeutil import parse_duration_us

log = logging.getLogger(__name__)

EU_EEA_CODES = ",".join(sorted(EU_EEA))


class IngestSettings(CommonSettings):
    ingest_host: str = Field(default="127.0.0.1", description="Where /metrics, /healthz, /readyz listen.")
    ingest_port: int = Field(default=9101)
    # Small enough that consent changes are picked up between batches within a few ms.
    ingest_max_records: int = Field(default=2_000, description="Most posts handled per poll.")
    ingest_poll_ms: int = Field(default=50)
    max_poll_interval_ms: int = Field(
        default=300_000, gt=0, description="Longest gap between two polls of `posts` before the group drops the worker."
    )

    posts_framing: Literal["json", "schema-registry"] = Field(
        default="json",
        description="How values on `posts` are framed: plain JSON, or as a Confluent-compatible Schema Registry JSON serializer frames them (magic byte 0, 4-byte schema id, JSON).",
    )
    notice_rule: Literal["on", "off"] = Field(
        default="on",
        description="'off' accepts posts without any notice: only where the platform has no notice obligation at all.",
    )
    notice_grace: str = Field(default="30d", description="How long after a user's first notice their posts may be used.")
    notice_jurisdictions: str = Field(default=EU_EEA_CODES, description="Comma-separated ISO country codes where a notice is required.")
    deferred_max_posts: int = Field(
        default=1_500_000, gt=0,
        description="Deferred posts indexed in memory (about 300 bytes each; their bodies stay in Kafka); beyond it they wait unindexed.",
    )

    drop_counts_interval_s: float = Field(
        default=10.0, gt=0, description="How often the per-user-day counts of dropped posts go to consentry.drop-counts (the audit trail)."
    )

    @field_validator("notice_grace")
    @classmethod
    def _grace_is_a_duration(cls, value: str) -> str:
        parse_duration_us(value)  # raises ValueError with the accepted forms
        return value

    @field_validator("notice_jurisdictions")
    @classmethod
    def _jurisdictions_are_country_codes(cls, value: str) -> str:
        bad = [c for c in (c.strip() for c in value.split(",")) if c and not is_country_code(c)]
        if bad:
            raise ValueError(f"not ISO 3166-1 alpha-2 codes (two upper-case letters): {', '.join(bad)}")
        return value

    @property
    def notice_policy(self) -> NoticePolicy | None:
        """None when the notice rule is off."""
        if self.notice_rule == "off":
            return None
        jurisdictions = frozenset(c.strip() for c in self.notice_jurisdictions.split(",") if c.strip())
        return NoticePolicy(parse_duration_us(self.notice_grace), jurisdictions)

    def warn_if_notice_rule_off(self) -> None:
        if self.notice_rule == "off":
            log.warning(
                "CONSENTRY_NOTICE_RULE=off: posts are used without any notice to their authors; "
                "only acceptable where the platform has no notice obligation at all"
            )
