#!/usr/bin/env bash
# `make images`: the three images, antrian-sync-api, antrian-mailer and antrian-booking-expiry, tagged with
# antrian's version (shared/pyproject.toml), each from services/<name>/Dockerfile with the repository root as
# build context.
#
# The builder: BuildKit when the client has it (docker buildx), the classic builder otherwise (Debian's
# docker.io 20.10, many air-gapped farms); the Dockerfiles need nothing either one lacks (no `# syntax=` line,
# no RUN --mount). Builds use the host's network (--network host; BUILD_NETWORK changes it): pip in the
# build stage reaches the package index as this machine does.
#
# The base: PYTHON_IMAGE when given (`make images PYTHON_IMAGE=registry.example/python:3.11-slim`); else the
# Dockerfiles' python:3.11.7-slim-bookworm when the engine has it or can pull it; else, with no registry in
# reach, the base scripts/base-image.sh makes here from Debian's packages (made once, then reused).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-docker.sh
DOCKER=${DOCKER:-$(scripts/docker.sh --which)}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' shared/pyproject.toml)}
SERVICES=(sync-api mailer booking-expiry)
BUILD_NETWORK=${BUILD_NETWORK:-host}

if [[ -z "${PYTHON_IMAGE:-}" ]]; then
  default=$(sed -n 's/^ARG PYTHON_IMAGE=//p' services/sync-api/Dockerfile)
  if "$DOCKER" image inspect "$default" >/dev/null 2>&1; then
    PYTHON_IMAGE=$default
  elif timeout 300 "$DOCKER" pull -q "$default" >/dev/null 2>&1; then
    PYTHON_IMAGE=$default
  else
    export BASE_IMAGE=${BASE_IMAGE:-antrian-base:python3.11-bookworm}
    echo "images: $default cannot be pulled (no registry in reach): building on $BASE_IMAGE (scripts/base-image.sh)"
    scripts/base-image.sh
    PYTHON_IMAGE=$BASE_IMAGE
  fi
fi

if "$DOCKER" buildx version >/dev/null 2>&1; then
  builder=BuildKit
  export DOCKER_BUILDKIT=1
else
  builder="the classic builder"
  export DOCKER_BUILDKIT=0
fi

mkdir -p var/log
for service in "${SERVICES[@]}"; do
  image="antrian-$service:$VERSION"
  log="var/log/image-$service.log"
  started=$SECONDS
  echo "images: building $image on $PYTHON_IMAGE with $builder (log: $log)"
  if ! "$DOCKER" build --network "$BUILD_NETWORK" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
      --label "org.opencontainers.image.version=$VERSION" \
      -f "services/$service/Dockerfile" -t "$image" . >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "images: building $image failed (the whole log: $log)" >&2
    exit 1
  fi
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$image")
  echo "images: $image built in $((SECONDS - started)) s, $((size / 1000000)) MB"
done
