#!/usr/bin/env bash
# Re-pins requirements/runtime.txt and requirements/dev.txt from pyproject.toml (and uv.txt, the installer), with the hash of
# every file PyPI serves for each pinned version (any platform, Python 3.11), so that `make venv`
# and the image install exactly what was tested. Run it (`make lock`) after changing a pin in
# pyproject.toml, then `make test`. The dev lock is constrained by the runtime lock: a package
# both need has one version in both. uv comes from PyPI into a throwaway virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
# The uv of requirements/uv.in locks, and `make venv` installs with, the same version.
UV_VERSION="$(sed -n 's/^uv==//p' requirements/uv.in)"
tool="$(mktemp -d)"
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool/venv"
"$tool/venv/bin/python" -m pip install --quiet "uv==$UV_VERSION"
"$tool/venv/bin/uv" pip compile requirements/uv.in \
  --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet -o requirements/uv.txt
compile() {
  "$tool/venv/bin/uv" pip compile pyproject.toml requirements/tools.in \
    --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet "$@"
}
compile --extra otlp -o requirements/runtime.txt
compile --extra dev --extra otlp --constraint requirements/runtime.txt -o requirements/dev.txt
echo "requirements/runtime.txt: $(grep -c '^[a-z0-9].*==' requirements/runtime.txt) packages; requirements/dev.txt: $(grep -c '^[a-z0-9].*==' requirements/dev.txt)"
