"""The documents say what the code does: every setting with its default, every topic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from consentry.topics import Topics
from tests.support.deploy import ROOT, SETTINGS_OF_COMMAND, env_names

OPERATIONS = ROOT / "docs" / "operations.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def table_rows(markdown: Path) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in markdown.read_text().splitlines() if line.startswith("| `")]


def shown(default: Any) -> str:
    """How the configuration table writes a default."""
    if default is None:
        return "unset"
    if isinstance(default, Path):
        return f"`./{default}`"
    if default == "":
        return '`""`'
    return f"`{default}`"


def test_the_configuration_tables_list_every_setting_with_its_default() -> None:
    documented = {}
    for cells in table_rows(OPERATIONS):
        name = re.fullmatch(r"`([A-Z_]+)`", cells[0])
        if name and len(cells) == 4:  # variable | read by | default | meaning: one table for all
            documented[name.group(1)] = cells[2]

    expected = {}
    for cls in set(SETTINGS_OF_COMMAND.values()):
        for env, field in env_names(cls).items():
            expected[env] = shown(cls.model_fields[field].default)

    assert set(documented) == set(expected)
    for env, default in expected.items():
        assert documented[env].startswith(default), f"{env}: the code's default is {default}, the table says {documented[env]}"


def test_the_architecture_lists_every_topic_with_its_configuration() -> None:
    rows = {re.sub(r"`", "", cells[0]): cells for cells in table_rows(ARCHITECTURE)}
    for spec in Topics().specs():
        assert spec.name in rows, spec.name
        partitions = rows[spec.name][2]
        assert ("CONSENTRY_PARTITIONS" in partitions) == spec.user_keyed, spec.name
        assert ("compact" in rows[spec.name][3]) == (spec.config.get("cleanup.policy") == "compact"), spec.name


SECURITY = ROOT / "docs" / "security.md"
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_test_the_threat_model_names_exists() -> None:
    named = TEST_REFERENCE.findall(SECURITY.read_text())
    assert len(named) >= 15
    for path, test in named:
        source = ROOT / path
        assert source.exists(), path
        assert re.search(rf"^(async )?def {test}\(", source.read_text(), re.MULTILINE), f"{path}::{test} does not exist"


def test_the_threat_model_names_every_attack_test() -> None:
    named = {test for _path, test in TEST_REFERENCE.findall(SECURITY.read_text())}
    for path in ("tests/integration/test_gateway_attacks.py", "tests/e2e/test_internal_doors.py"):
        attacks = set(re.findall(r"^def (test_\w+)\(", (ROOT / path).read_text(), re.MULTILINE))
        assert attacks <= named, f"{path}: {sorted(attacks - named)} not in docs/security.md"


def test_the_readmes_commands_table_lists_every_command() -> None:
    from typer.main import get_command

    from consentry_cli.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Commands")[1].split("\n## ")[0]
    listed = {n for row in table_rows_of(table) for pair in re.findall(r"`consentry ([a-z][a-z-]*)|/ `([a-z][a-z-]*)`", row[0]) for n in pair if n}

    assert commands - listed == set(), "commands missing from the README's commands table"
    assert listed - commands == set(), "the README lists commands that do not exist"
    assert "`consentry --version`" in table


def table_rows_of(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|") and not line.startswith("| ---")]
