#!/usr/bin/env bash
# Installs Debian's wrk (the HTTP load generator of `make bench`), when missing.
# Needs root (or sudo) and the Debian package registry; without it the gateway measurement is skipped.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null || echo "wrk could not be installed: the gateway measurement will be skipped" >&2
