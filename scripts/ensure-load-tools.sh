#!/usr/bin/env bash
# The benchmarks drive HTTP load with hey (Debian's package), a rate-limited Go load generator.
set -euo pipefail
if ! command -v hey >/dev/null 2>&1; then
  echo "ensure-load-tools: installing Debian's hey"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hey >/dev/null
fi
