#!/usr/bin/env bash
# The alert and dashboard tests check PromQL with promtool (Prometheus' own checker), taken from Debian's
# prometheus package without installing it: the package is downloaded, unpacked in a temporary folder, and
# only its promtool is kept, in var/tools/ (gitignored; `make clean` removes it). Nothing runs as a service.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="$ROOT/var/tools/promtool"

if [ -x "$TARGET" ] && "$TARGET" --version >/dev/null 2>&1; then
  echo "ensure-promtool: $TARGET"
  exit 0
fi

echo "ensure-promtool: fetching Debian's prometheus package for its promtool"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
if ! apt-get download -qq prometheus >/dev/null 2>&1; then
  # The package lists may be missing or stale (a fresh container): refresh them once and try again.
  apt-get update -qq
  apt-get download -qq prometheus >/dev/null
fi
dpkg -x prometheus_*.deb unpacked
mkdir -p "$(dirname "$TARGET")"
install -m 0755 unpacked/usr/bin/promtool "$TARGET.tmp"
mv "$TARGET.tmp" "$TARGET"
"$TARGET" --version | head -1
echo "ensure-promtool: $TARGET"
