"""The guarantee tests run with the production default: the notice rule on (30 days of grace,
the EU/EEA), posts with countries, notices sent (tests/reliability/workload.py). `scaled_system`
runs two consent and two ingest workers (their own ports and data directories)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_system
from tests.support.system import System

SCALED = {"consent": 2, "ingest": 2}


@pytest.fixture
def system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    yield from running_system(broker, tmp_path, request, notices=True)


@pytest.fixture
def scaled_system(broker: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    yield from running_system(broker, tmp_path, request, notices=True, workers=SCALED)
