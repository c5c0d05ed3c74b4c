#!/usr/bin/env bash
# Refreshes tests/deploy/schemas/asyncapi-3.0.0.json, the official AsyncAPI 3.0.0 JSON Schema,
# from the npm package @asyncapi/specs (no PyPI package ships it). The tests read the vendored
# copy, so they run offline; run this only to move to another version of the package.
set -euo pipefail
VERSION="${1:-6.11.1}"
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@asyncapi/specs@${VERSION}" >/dev/null && tar xzf asyncapi-specs-*.tgz)
cp "$work/package/schemas/3.0.0-without-\$id.json" tests/deploy/schemas/asyncapi-3.0.0.json
cp "$work/package/LICENSE" tests/deploy/schemas/LICENSE.asyncapi-specs
cp "$work/package/NOTICE" tests/deploy/schemas/NOTICE.asyncapi-specs
sha256sum tests/deploy/schemas/asyncapi-3.0.0.json
echo "now update the version and checksum in tests/deploy/schemas/README.md"
