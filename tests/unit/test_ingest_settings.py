"""Ingest reads the notice rule from its environment, and refuses what it cannot read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consentry.domain.notices import EU_EEA, NoticePolicy
from services.ingest.settings import IngestSettings

D = 86_400_000_000


def test_ingest_reads_the_notice_rule_from_its_settings() -> None:
    assert IngestSettings().notice_policy == NoticePolicy(30 * D, EU_EEA)
    assert IngestSettings(notice_grace="PT5M", notice_jurisdictions="FR, DE").notice_policy == NoticePolicy(300_000_000, frozenset({"FR", "DE"}))
    assert IngestSettings(notice_jurisdictions="").notice_policy == NoticePolicy(30 * D, frozenset())
    assert IngestSettings(notice_rule="off").notice_policy is None
    with pytest.raises(ValidationError, match="not a duration"):
        IngestSettings(notice_grace="a month")
    with pytest.raises(ValidationError, match="fr, FRA"):
        IngestSettings(notice_jurisdictions="fr,FRA,DE")
