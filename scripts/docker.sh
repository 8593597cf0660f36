#!/usr/bin/env bash
# The Docker client antrian's scripts and image tests use, chosen the same way every time: DOCKER when set;
# else the engine package's own client /usr/bin/docker (Debian's docker.io, docker-ce) when present, since it
# builds with the builder its engine has (a newer client elsewhere on PATH may require buildx); else `docker`.
#   scripts/docker.sh --which     prints the client's path
#   scripts/docker.sh ARGS...     runs it
set -euo pipefail
if [[ -n "${DOCKER:-}" ]]; then
  client=$DOCKER
elif [[ -x /usr/bin/docker ]]; then
  client=/usr/bin/docker
else
  client=$(command -v docker || echo docker)
fi
if [[ "${1:-}" == "--which" ]]; then
  echo "$client"
  exit 0
fi
exec "$client" "$@"
