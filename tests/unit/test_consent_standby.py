"""Issue 17: the consent service's standby replicas (faust's table_standby_replicas) are a setting,
so that the Helm chart's consent.standbyReplicas reaches faust (before: always 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.consent.app import create_app
from services.consent.settings import ConsentSettings


@pytest.mark.parametrize(("env", "expected"), [(None, 0), ("1", 1), ("2", 2)])
def test_the_standby_replicas_setting_reaches_faust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, expected: int) -> None:
    if env is not None:
        monkeypatch.setenv("CONSENTRY_CONSENT_STANDBY_REPLICAS", env)
    settings = ConsentSettings(consent_store="memory://", kafka_bootstrap_servers="127.0.0.1:1", partitions=4, data_dir=tmp_path)

    app = create_app(settings)

    assert app.conf.table_standby_replicas == expected


def test_a_negative_standby_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTRY_CONSENT_STANDBY_REPLICAS", "-1")
    with pytest.raises(ValueError, match="consent_standby_replicas"):
        ConsentSettings()
