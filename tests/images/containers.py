"""Helpers of the image tier (make test-images): the images `make images` built, run as Kubernetes runs them
(read-only root, a tmpfs for /tmp, every capability dropped, uid 10001), on the host's network so that every
address stays on loopback: the machine's PostgreSQL and RabbitMQ, and the tests' own servers."""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib

from tests.support import ROOT, base_env, wait_until

#: The client scripts/docker.sh picks (DOCKER, else the engine package's /usr/bin/docker, else `docker`).
DOCKER = subprocess.run([str(ROOT / "scripts" / "docker.sh"), "--which"], capture_output=True, text=True,
                        check=True, timeout=30).stdout.strip()
VERSION = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())["project"]["version"]
IMAGES = {service: f"antrian-{service}:{VERSION}" for service in ("sync-api", "mailer", "booking-expiry")}
#: Each deployable's terminationGracePeriodSeconds, read from its manifest: `docker stop` must end it within that.
GRACE = {
    name: int(re.search(r"terminationGracePeriodSeconds: (\d+)", (ROOT / "k8s" / "base" / f"{name}.yaml").read_text())
              [1])
    for name in ("sync-api", "sync-worker", "mailer", "booking-expiry")
}
#: What a container of the tests gets from the tests' environment (nothing else of this machine's leaks in).
PASSED = ("DATABASE_URL", "BROKER_URL", "API_TOKEN", "PAYMENT_SERVER_KEY", "PAYMENT_API_BASE_URL", "UPSTREAM_TIMEOUT_S",
          "SESSION_COOKIE_SECURE")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=check)


def container_env(**overrides: str) -> dict[str, str]:
    """The tests' database, vhost, token and payment gateway; every listener on loopback."""
    env = {key: value for key, value in base_env().items() if key in PASSED}
    # sync-api's (and its metrics') bind address, and Dramatiq's metrics server's: loopback, not 0.0.0.0.
    env.update(HOST="127.0.0.1", dramatiq_prom_host="127.0.0.1", LOG_LEVEL="info")
    env.update(overrides)
    return env


class Container:
    """A detached container of the tests, hardened as the manifests run it; removed by :meth:`remove`."""

    counter = 0

    def __init__(self, image: str, *args: str, env: dict[str, str], entrypoint: str | None = None,
                 name: str = "c") -> None:
        Container.counter += 1
        self.name = f"antrian-test-{os.getpid()}-{name}-{Container.counter}"
        options = ["--name", self.name, "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m",
                   "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "10001:10001"]
        for key, value in env.items():
            options += ["-e", f"{key}={value}"]
        if entrypoint:
            options += ["--entrypoint", entrypoint]
        self.options = options
        self.image = image
        self.args = list(args)

    def start(self) -> Container:
        docker("run", "-d", *self.options, self.image, *self.args)
        return self

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run to the end (``docker run --rm``); returns what it printed and its exit code."""
        return docker("run", "--rm", *self.options, self.image, *self.args, timeout=timeout, check=False)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False, timeout=30)
        return result.stdout + result.stderr

    def state(self) -> dict[str, str]:
        out = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", self.name, check=False).stdout.split()
        return {"status": out[0], "exit_code": out[1]} if len(out) == 2 else {"status": "gone", "exit_code": ""}

    def running(self) -> bool:
        state = self.state()
        if state["status"] not in {"running", "created"}:
            raise AssertionError(f"{self.name} is {state}:\n{self.logs()[-4000:]}")
        return True

    def exec(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A command run in the container as Kubernetes runs an exec probe."""
        return docker("exec", self.name, *command, timeout=timeout, check=False)

    def probe(self, *command: str) -> bool:
        self.running()
        return self.exec(*command).returncode == 0

    def stop(self, grace: int) -> tuple[float, int]:
        """`docker stop -t grace` (SIGTERM, SIGKILL after grace seconds); returns (seconds taken, exit code)."""
        started = time.monotonic()
        docker("stop", "-t", str(grace), self.name, timeout=grace + 60)
        taken = time.monotonic() - started
        return taken, int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False, timeout=60)


def wait_for_log(container: Container, pattern: str, *, timeout: float, after: int = 0) -> str:
    """Wait until the container's output (past its first ``after`` characters) matches ``pattern``."""
    regex = re.compile(pattern)
    return wait_until(lambda: regex.search(container.logs()[after:]) and container.logs(), timeout=timeout,
                      interval=0.2, what=f"{container.name} to log {pattern!r}")

