"""What is left of purged users under a Delta table's directory, `_delta_log` included.

Every file is searched as raw bytes, and every Parquet file (data and checkpoints, whose
pages are compressed) is also decoded and every string in it, nested ones included, searched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)] + [k for k in value if isinstance(k, str)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def residue(table_dir: Path, needles: set[str]) -> list[str]:
    """Where any of `needles` still appears: "file: needle" lines (empty when nothing left)."""
    hits: list[str] = []
    encoded = {n: n.encode() for n in needles if n}
    for path in sorted(p for p in table_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path.relative_to(table_dir)}: {n} (raw bytes)" for n, b in encoded.items() if b in data]
        if path.suffix == ".parquet":
            text = "\n".join(_strings(pq.read_table(path).to_pylist()))
            hits += [f"{path.relative_to(table_dir)}: {n} (decoded)" for n in encoded if n in text]
    return hits


def time_travel_residue(uri: str, users: set[str]) -> list[str]:
    """Rows of `users` that any older version of the table still yields."""
    from deltalake import DeltaTable

    hits = []
    latest = DeltaTable(uri).version()
    for version in range(latest + 1):
        try:
            rows = DeltaTable(uri, version=version).to_pyarrow_table(columns=["user_id"]).column("user_id").to_pylist()
        except Exception:
            continue  # that version's log or files are gone: it cannot be read at all
        hits += [f"version {version}: {u}" for u in set(rows) & users]
    return hits


def vacuum(uri: str) -> str:
    """`consentry vacuum`, as an operator runs it."""
    result = subprocess.run([sys.executable, "-m", "consentry_cli", "vacuum"], env={**__import__("os").environ, "TRAINING_STORE_URI": uri},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr
