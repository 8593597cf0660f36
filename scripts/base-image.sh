#!/usr/bin/env bash
# A Python base image made here, from Debian's packages, for building antrian's images where no image
# registry is reachable (an air-gapped build farm, or this machine): `make images` uses it when
# python:3.11.7-slim-bookworm can be neither found locally nor pulled. By hand:
#
#   scripts/base-image.sh                  # makes antrian-base:python3.11-bookworm, unless it exists
#   make images PYTHON_IMAGE=antrian-base:python3.11-bookworm
#
# What it holds: `debootstrap --variant=minbase bookworm` with python3 (3.11), python3-venv, python3-pip and
# ca-certificates (no compiler: debootstrap installs no Recommends), `python` linked to `python3`, and this
# machine's CA bundle (/etc/ssl/certs/ca-certificates.crt) in place of Debian's, so that pip in a build
# trusts whatever this machine trusts (a TLS-intercepting proxy in front of the package index, a private
# index's CA). Only Debian's mirror is needed (the one apt uses here, else deb.debian.org), and debootstrap
# (installed from it when missing). The image is imported with `docker import`: no registry at all.
#
# Options: --rebuild (make it again even if it exists); BASE_IMAGE names it; DEBIAN_MIRROR picks the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-$(scripts/docker.sh --which)}
BASE_IMAGE=${BASE_IMAGE:-antrian-base:python3.11-bookworm}
SUITE=bookworm

if [[ "${1:-}" != "--rebuild" ]] && "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "base-image: debootstrap needs root" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "base-image: installing Debian's debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
  # The mirror apt already uses here (deb822 sources first, then sources.list), else Debian's CDN.
  DEBIAN_MIRROR=$( (grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
                    grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}') \
                  | grep -v -e security -e '^$' | head -1 || true)
  DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi

root=$(mktemp -d /var/tmp/antrian-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap $SUITE from $DEBIAN_MIRROR (a few minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$SUITE" "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
ln -sf python3 "$root/usr/bin/python"
# What a container never needs: apt's lists and caches, documentation, manual pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $SUITE: python3, python3-venv, python3-pip, ca-certificates" \
  - "$BASE_IMAGE" >/dev/null
echo "base-image: made $BASE_IMAGE"
