"""The floors of the house, enforced (docs/architecture.md, "Where things live").

    consentry_cli/        top floor: the command line, `consentry up`'s supervisor, the embedded broker, the demo
    services/<name>/      one service each: consent, ingest, sink, gateway
    consentry/            the kernel: the wire, Kafka and settings adapters, patches to libraries
    consentry/domain/     ground floor: types, vocabulary and pure rules, standard library only

A module may import its own floor and the floors below it, never above; services never import
each other, and the gateway's three rooms (api, pages, console) share only what sits at the
gateway's root. Every `import` statement counts, including those inside functions.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("consent", "ingest", "sink", "gateway", "audit")
GATEWAY_ROOMS = ("api", "pages", "console")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved against
    its module name (`name`, or the one its place in the tree gives)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from services import ingest` names a module too
                yield node.lineno, f"{module}.{alias.name}"


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def project_module(module: str) -> bool:
    return any(is_under(module, top) for top in ("consentry", "consentry_cli", "services"))


def violations(files: list[Path], forbidden) -> list[str]:  # type: ignore[no-untyped-def]
    found = []
    for path in files:
        for line, module in imports_of(path):
            why = forbidden(module_name(path), module)
            if why:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}: {why}")
    return sorted(set(found))


def test_the_domain_imports_nothing_but_the_standard_library_and_itself() -> None:
    def forbidden(importer: str, module: str) -> str | None:
        top = module.split(".")[0]
        if is_under(module, "consentry.domain") or top in sys.stdlib_module_names or top == "__future__":
            return None
        if module == "consentry":  # `from consentry import domain`-style parents are not imports of code
            return None
        return "the domain is the ground floor: standard library only"

    assert violations(python_files("consentry/domain"), forbidden) == []


def test_the_kernel_never_imports_a_service_or_the_command_line() -> None:
    def forbidden(importer: str, module: str) -> str | None:
        if is_under(module, "services") or is_under(module, "consentry_cli"):
            return "the kernel stays below the services and the command line"
        return None

    assert violations(python_files("consentry"), forbidden) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_the_kernel_and_itself_only(service: str) -> None:
    def forbidden(importer: str, module: str) -> str | None:
        if is_under(module, "consentry_cli"):
            return "the command line is the top floor"
        if is_under(module, "services") and module not in ("services",) and not is_under(module, f"services.{service}"):
            return "services never import each other"
        return None

    assert violations(python_files(f"services/{service}"), forbidden) == []


def test_the_gateways_rooms_share_only_what_sits_at_its_root() -> None:
    rooms = [room for room in GATEWAY_ROOMS if (ROOT / "services/gateway" / room).is_dir()]
    assert rooms == list(GATEWAY_ROOMS), "the gateway shows its three jobs as sub-packages"

    def forbidden(importer: str, module: str) -> str | None:
        mine = importer.split(".")[2]
        for room in rooms:
            if room != mine and is_under(module, f"services.gateway.{room}"):
                return f"the gateway's {mine} room does not reach into its {room} room"
        return None

    files = [p for room in rooms for p in python_files(f"services/gateway/{room}")]
    assert violations(files, forbidden) == []


def test_the_rules_see_every_kind_of_import(tmp_path: Path) -> None:
    """The walk itself: absolute, relative, `from x import module` and imports in functions."""
    sample = tmp_path / "sample.py"
    sample.write_text("from . import model\nfrom ..wire import parse_post\n\ndef f():\n    import services.ingest\n")
    found = {module for _line, module in imports_of(sample, "consentry.domain.sample")}
    assert {"consentry.domain.model", "consentry.wire", "services.ingest"} <= found
    assert project_module("consentry.wire") and not project_module("orjson")


def test_the_client_library_needs_no_server_and_imports_its_extras_lazily() -> None:
    """consentry.client is for the platform's producers and notice sender: no service, no
    command line, no faust or fastapi at all; at import time the standard library and the
    stdlib-only kernel modules only (aiokafka and PyJWT inside the functions that use them)."""
    stdlib_kernel = ("consentry.contract", "consentry.domain", "consentry.timeutil", "consentry.client")
    server = ("services", "consentry_cli", "faust", "fastapi", "uvicorn", "mode", "rocksdict", "deltalake")

    def forbidden(importer: str, module: str) -> str | None:
        if any(is_under(module, top) for top in server):
            return "the client library imports no service, no command line, no server library"
        return None

    files = python_files("consentry/client")
    assert files and violations(files, forbidden) == []
    for path in files:
        top_level = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__" or any(is_under(module, m) for m in stdlib_kernel), (
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {module} at import time: import it where it is used"
                )
