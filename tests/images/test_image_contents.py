"""What each image `make images` built holds: its commands, and no compiler, no tests, no secrets, no build
leftovers, within the expected size (make test-images)."""

from __future__ import annotations

import json
import re

import pytest

from tests.images.containers import IMAGES, docker

pytestmark = pytest.mark.images

#: Names that would be secrets if an image set them (as tests/deploy/test_dockerfiles.py reads the Dockerfiles).
SECRET_WORDS = re.compile(r"TOKEN|PASSWORD|SECRET|KEY|PASS\b", re.IGNORECASE)
#: Measured here on the base scripts/base-image.sh makes (Debian bookworm minbase + python3, 176 MB):
#: sync-api 268 MB, mailer 254 MB, booking-expiry 251 MB; python:3.11.7-slim-bookworm is ~130 MB, so images on
#: it are smaller still. The bound leaves ~30% headroom: a build that drags in a compiler, the build stage's
#: wheels or the tests would pass it.
MAX_SIZE_MB = 350
COMMANDS = {
    "sync-api": ["sync-api", "sync-worker", "antrian", "antrian-worker-probe"],
    "mailer": ["mailer", "antrian", "antrian-worker-probe"],
    "booking-expiry": ["booking-expiry", "booking-expiry-scheduler", "antrian", "antrian-worker-probe"],
}
#: Looked for in the image: any of these found fails the test.
SCRIPT = r"""
set -u
for tool in gcc cc c++ g++ clang ld make; do command -v "$tool" >/dev/null 2>&1 && echo "compiler: $tool"; done
ls /usr/lib/gcc 2>/dev/null | grep -q . && echo "compiler: /usr/lib/gcc"
for path in /src /wheels /opt/venv/lib/python3*/site-packages/tests /home/antrian/tests /tests; do
  [ -e "$path" ] && echo "leftover: $path"
done
find / -xdev \( -name conftest.py -o -name 'test_*.py' -path '*antrian*' -o -name '.env' -o -name 'id_rsa*' \
  -o -name '*.key' -o -name 'docker-compose*.yml' -o -name constraints.txt -o -name '.git' \) 2>/dev/null \
  | grep -v -e '^/proc' -e '^/sys' | sed 's/^/found: /'
for command in "$@"; do command -v "$command" >/dev/null || echo "missing: $command"; done
exit 0
"""


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_the_image_holds_its_commands_and_no_compiler_tests_secrets_or_leftovers(service):
    image = IMAGES[service]
    [inspected] = json.loads(docker("image", "inspect", image).stdout)
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    names = [entry.split("=", 1)[0] for entry in config["Env"]]
    assert not [name for name in names if SECRET_WORDS.search(name)], names
    size_mb = inspected["Size"] / 1_000_000
    assert size_mb < MAX_SIZE_MB, f"{image} is {size_mb:.0f} MB"

    result = docker("run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL", "--user", "10001:10001",
                    "--entrypoint", "sh", image, "-c", SCRIPT, "sh", *COMMANDS[service], timeout=180)
    assert result.stdout.strip() == "", result.stdout
    # The packages are installed as wheels (no editable install pointing at a source folder).
    links = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                   "ls /opt/venv/lib/python3*/site-packages | grep -i -e __editable__ -e egg-link || true").stdout
    assert links.strip() == "", links
