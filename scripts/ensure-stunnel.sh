#!/usr/bin/env bash
# Installs Debian's stunnel4 (a TLS terminator) when missing: the Kafka TLS tests put it in front
# of the embedded broker, which speaks PLAINTEXT only (tests/support/tls.py, docs/kafka-security.md).
# Called by `make test`; needs root (or sudo) and the Debian package registry.
set -euo pipefail
if command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends stunnel4 >/dev/null
