#!/usr/bin/env bash
# A Docker engine for `make images` and `make test-images`, tried the way a new user would: when `docker info`
# already answers (a desktop, a systemd-managed engine, a CI runner's), nothing is done. Otherwise Debian's
# engine (docker.io, 20.10, the classic builder) and docker-compose (1.29) are installed, and dockerd is started
# in the background (there is no systemd here), its log in var/log/dockerd.log. Idempotent: run it twice,
# the second run does nothing.
#
# The engine it starts is told to leave the machine's firewall and bridges alone (--iptables=false,
# --bridge=none): every container antrian builds or runs here uses --network host (the package index for
# pip, the machine's PostgreSQL and RabbitMQ on loopback), so no bridge network or NAT is needed.
#
# The client: DOCKER when set, else scripts/docker.sh's choice (the engine's own client, /usr/bin/docker,
# when installed: a newer client on PATH would need buildx for `docker build`).
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-$(scripts/docker.sh --which)}

if [[ "${1:-}" == "--compose" ]]; then
  if ! "$DOCKER" compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    echo "ensure-docker: installing Debian's docker-compose"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  fi
fi

if "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing Debian's Docker engine (docker.io)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  DOCKER=$(scripts/docker.sh --which)
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-docker: no Docker engine answers and only root can start one here: start dockerd (or Docker Desktop)" >&2
  exit 1
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  mkdir -p var/log
  echo "ensure-docker: starting dockerd (log: var/log/dockerd.log)"
  # setsid: the engine outlives this make run, and the next run finds it answering.
  setsid dockerd --host=unix:///var/run/docker.sock --iptables=false --bridge=none \
    >>var/log/dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
  if "$DOCKER" info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "ensure-docker: dockerd did not answer within 60 s; see var/log/dockerd.log" >&2
tail -20 var/log/dockerd.log >&2 || true
exit 1
