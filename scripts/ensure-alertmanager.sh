#!/usr/bin/env bash
# The alert routing tests (tests/deploy/test_alertmanager.py, tests/alerting/) run Debian's Alertmanager and its
# amtool: `amtool check-config` on the routing, and a real Alertmanager that delivers alerts to a local webhook.
# Unlike promtool (scripts/ensure-promtool.sh) the package is installed, not only unpacked: Debian's binary reads
# its default notification templates from /usr/share/prometheus/alertmanager/ instead of embedding them.
# Installing never leaves a service running: a container's policy-rc.d refuses to start one, and on a machine
# with systemd the unit that the fresh install started is stopped and disabled again (the tests start their own
# Alertmanager on free loopback ports). Quick and silent when it is installed already.
set -euo pipefail
PACKAGE=prometheus-alertmanager
NEEDED=(/usr/bin/prometheus-alertmanager /usr/bin/amtool /usr/share/prometheus/alertmanager/default.tmpl)

installed() {
  for path in "${NEEDED[@]}"; do [ -e "$path" ] || return 1; done
  /usr/bin/amtool --version >/dev/null 2>&1
}

if installed; then
  echo "ensure-alertmanager: $(/usr/bin/prometheus-alertmanager --version 2>&1 | head -1)"
  exit 0
fi

echo "ensure-alertmanager: installing Debian's $PACKAGE (alertmanager and amtool)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null 2>&1; then
  # The package lists may be missing or stale (a fresh container): refresh them once and try again.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$PACKAGE" 2>/dev/null; then
  echo "ensure-alertmanager: stopping and disabling the $PACKAGE service this install started"
  systemctl disable --now "$PACKAGE" >/dev/null 2>&1 || true
fi
installed || { echo "ensure-alertmanager: $PACKAGE is installed but ${NEEDED[*]} are not all there" >&2; exit 1; }
echo "ensure-alertmanager: $(/usr/bin/prometheus-alertmanager --version 2>&1 | head -1)"
