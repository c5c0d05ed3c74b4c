"""Figures the reliability tests report, per guarantee, printed at the end of the run
(tests/conftest.py) and written to test-output/reliability-summary.json."""

from __future__ import annotations

from collections import defaultdict

GUARANTEES = ("no leak", "nothing lost", "fail closed", "old and new requests")
_figures: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


def record(guarantee: str, **counts: int) -> None:
    assert guarantee in GUARANTEES, guarantee
    for name, count in counts.items():
        _figures[guarantee][name] += int(count)


def figures() -> dict[str, dict[str, int]]:
    return {g: dict(_figures[g]) for g in GUARANTEES if g in _figures}


def merge(more: dict[str, dict[str, int]]) -> None:
    """Add another process's figures (a pytest-xdist worker's, see tests/conftest.py)."""
    for guarantee, counts in more.items():
        record(guarantee, **counts)
