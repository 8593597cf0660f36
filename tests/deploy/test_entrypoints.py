"""Each image's entry point, started for real without Docker: a virtual environment built the way the
image's Dockerfile builds /opt/venv (the build context as .dockerignore makes it, `python -m venv`, then
`pip install -c constraints.txt ./shared ./services/<name>`: that service's dependencies only, no
development tools), then the command compose runs (the Dockerfile's ENTRYPOINT/CMD, with compose's
entrypoint/command applied as Docker applies them) with the image's ENV, against the test database and
vhost. Each service must start (sync-api: /healthz and /readyz; a worker: /metrics and its compose health
check, ``antrian-worker-probe <name> --ready``, from the same venv) and exit 0 on SIGTERM within its grace.

The venvs are kept under var/test-venvs/<folder>-<hash of the service's and shared's pyproject.toml and
constraints.txt> (var/ is gitignored, so ruff skips it, and pytest never collects a venv): a first run
builds each (pip: 15-20 s apiece on an idle machine), later runs reuse it, and a change of the code only
reinstalls the two local packages (about 5 s). The venvs run on this machine's Python, which
test_the_venv_python_is_the_images_python_version holds to the images' PYTHON_IMAGE version.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from tests.deploy.test_dockerfiles import (
    FOLDERS,
    build_copies,
    context_files,
    dockerfile,
    exec_form,
    image_commands,
    instructions,
    pip_wheel_arguments,
    runtime_environment,
)
from tests.support import ROOT, Service, base_env, free_port, free_ports, http_ok, wait_until

VENVS = ROOT / "var" / "test-venvs"
COMPOSE = ROOT / "docker-compose.yml"
#: Where the Dockerfiles build the venv and keep temporary files; replaced by the test's own folders.
IMAGE_VENV, IMAGE_TMP = "/opt/venv", "/tmp"
#: Variables of this machine that would make the venv's Python import something else than the venv holds.
FOREIGN = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")
#: What the services need beyond base_env() to start (their `require`s; any school API URL will do).
NEEDS = {"sync-worker": {"UPSTREAM_BASE_URL": "http://127.0.0.1:9/"}}
#: How long a stopped service may take, at most, in these tests: idle, each stops in seconds; compose's
#: stop_grace_period (up to 330 s, a sweep's time limit) is for work in flight.
STOP_WAIT_S = 60
#: Development tools, which no image may hold: requirements-dev.txt's, by distribution name.
DEV_TOOLS = {re.split(r"[=<>~!\[; ]", line.strip(), maxsplit=1)[0].lower()
             for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "-"))}


# ---- the venv of an image ------------------------------------------------------------------------------


def _digest(paths: list[Path], root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (parallel test processes, and other sessions, build a venv once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip(venv: Path, *arguments: str, cwd: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *arguments], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pip install {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"


@functools.cache
def image_venv(folder: str) -> Path:
    """The venv of services/<folder>/Dockerfile's image, built once and kept under var/test-venvs/."""
    path = dockerfile(folder)
    sources = build_copies(path)  # constraints.txt, shared/, services/<folder>/
    assert "constraints.txt" in sources, "the Dockerfile installs with constraints.txt"
    projects = pip_wheel_arguments(path)  # ./shared ./services/<folder>
    dependencies = [ROOT / "services" / folder / "pyproject.toml", ROOT / "shared" / "pyproject.toml",
                    ROOT / "constraints.txt"]
    venv = VENVS / f"{folder}-{_digest(dependencies)}"

    with _locked(VENVS / f"{folder}.lock"), tempfile.TemporaryDirectory(prefix=f"context-{folder}-") as context:
        # The build context as Docker gets it: only what .dockerignore lets through (no build/, no *.egg-info)
        files = [Path(context) / file for file in context_files(sources)]
        for file in files:
            file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / file.relative_to(context), file)
        code = _digest(files, root=Path(context))  # what is installed, even if someone edits the tree meanwhile
        if not (venv / ".complete").exists():
            for stale in VENVS.glob(f"{folder}-*"):
                if stale.is_dir():
                    shutil.rmtree(stale)  # older dependencies' venvs, or one whose build was cut off
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            _pip(venv, "-c", "constraints.txt", *projects, cwd=Path(context))
            (venv / ".code").write_text(code)
            (venv / ".complete").write_text(f"built in {time.monotonic() - started:.1f} s\n")
        elif (venv / ".code").read_text() != code:
            # The code changed, the dependencies did not: reinstall only the two local packages
            _pip(venv, "--no-deps", "--force-reinstall", *projects, cwd=Path(context))
            (venv / ".code").write_text(code)
    return venv


def venv_python(venv: Path, code: str) -> str:
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=venv, env={key: value for key, value in os.environ.items()
                                                       if key not in FOREIGN})
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---- compose's view of the images ----------------------------------------------------------------------


@functools.cache
def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def folder_of(service: str) -> str:
    """The services/<folder> whose Dockerfile builds the image a compose service runs."""
    return compose_services()[service]["build"]["dockerfile"].split("/")[1]


def compose_argv(service: str) -> list[str]:
    """What the container runs: the image's ENTRYPOINT and CMD, with compose's entrypoint and command
    applied as Docker applies them (a new entrypoint drops the image's CMD)."""
    spec, path = compose_services()[service], dockerfile(folder_of(service))
    entrypoint = spec.get("entrypoint", exec_form(path, "ENTRYPOINT") or [])
    command = spec.get("command", [] if "entrypoint" in spec else exec_form(path, "CMD") or [])
    argv = [*entrypoint, *command]
    assert argv, f"{service} runs nothing"
    return argv


def grace_seconds(service: str) -> float:
    grace = compose_services()[service].get("stop_grace_period", "10s")  # Docker's default
    match = re.fullmatch(r"(\d+)s", grace)
    assert match, f"{service}'s stop_grace_period {grace} is not in seconds"
    return float(match[1])


class InImage(Service):
    """A Service started from an image's venv, in a folder of its own (the image's WORKDIR), not the repository
    (whose folders Python would otherwise find first)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, *, workdir: Path,
                 ready_url: str | None = None):
        super().__init__(name, argv, env, log_dir, ready_url=ready_url)
        self.workdir = workdir

    def start(self, timeout: float = 30) -> InImage:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, start_new_session=True)
        log.close()
        if self.ready_url:
            wait_until(self._ready, timeout=timeout, what=f"{self.name} at {self.ready_url}\n{self.log()[-3000:]}")
        return self

    def executable(self) -> list[str]:
        """The running process's command line: after the entry point's exec, the server itself."""
        return Path(f"/proc/{self.process.pid}/cmdline").read_bytes().decode().split("\0")

    def stop_cleanly(self, grace: float) -> float:
        """SIGTERM, as `docker stop` sends it to PID 1; the seconds until it exited 0."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=min(grace, STOP_WAIT_S))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs {min(grace, STOP_WAIT_S)} s after SIGTERM:\n"
                                 f"{self.log()[-3000:]}") from None
        assert code == 0, f"{self.name} exited with {code} after SIGTERM:\n{self.log()[-3000:]}"
        return time.monotonic() - started


def image_env(folder: str, venv: Path, tmp: Path, **settings: str) -> dict[str, str]:
    """base_env() (test database, vhost, token) with the image's ENV: /opt/venv is the test's venv, /tmp its
    own folder (TMPDIR too, so worker and probe share a private heartbeat folder)."""
    env = {key: value for key, value in base_env(**settings).items() if key not in FOREIGN}
    for key, value in runtime_environment(dockerfile(folder)).items():
        value = value.replace(IMAGE_VENV, str(venv)).replace("$PATH", env.get("PATH", os.defpath))
        env[key] = str(tmp) if value == IMAGE_TMP else value
    env["TMPDIR"] = str(tmp)
    return env


def start_in_image(service: str, services: list[Service], tmp_path: Path, *, ready_url: str | None = None,
                   timeout: float = 60, **settings: str) -> tuple[InImage, Path]:
    folder = folder_of(service)
    venv = image_venv(folder)
    tmp, workdir = tmp_path / f"{service}-tmp", tmp_path / f"{service}-home"
    tmp.mkdir()
    workdir.mkdir()
    command, *arguments = compose_argv(service)
    assert "/" not in command and (venv / "bin" / command).is_file(), f"{command} is not in {folder}'s venv"
    env = image_env(folder, venv, tmp, **NEEDS.get(service, {}), **settings)
    process = InImage(service, [str(venv / "bin" / command), *arguments], env, tmp_path, workdir=workdir,
                      ready_url=ready_url)
    services.append(process)
    process.start(timeout=timeout)
    return process, venv


# ---- the tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_images_venv_holds_its_commands_and_only_its_services_dependencies(folder):
    venv = image_venv(folder)
    installed = json.loads(venv_python(venv, (
        "import importlib.metadata as m, json; print(json.dumps({"
        "'scripts': sorted(e.name for e in m.entry_points(group='console_scripts')),"
        "'distributions': sorted(d.metadata['Name'].lower() for d in m.distributions())}))")))

    # antrian and antrian-worker-probe (the shared package's scripts), and the service's own
    commands = image_commands(folder)
    assert {"antrian", "antrian-worker-probe"} <= commands
    assert commands <= set(installed["scripts"]), sorted(commands - set(installed["scripts"]))
    for name in commands:
        assert os.access(venv / "bin" / name, os.X_OK), name
    # ... and every command compose runs from this image, health checks included
    for service, spec in compose_services().items():
        if spec.get("build") and folder_of(service) == folder:
            argv = compose_argv(service)
            if argv[0] == "python":  # a development stand-in, run from dev/ mounted read-only: in no image
                script = argv[1]
                assert script.startswith("/opt/dev/"), service
                assert f"./dev/{script.removeprefix('/opt/dev/')}:{script}:ro" in spec["volumes"], service
                continue
            assert argv[0] in installed["scripts"], service
            test = spec.get("healthcheck", {}).get("test", [])
            if test[:2] == ["CMD", "antrian-worker-probe"]:
                assert "antrian-worker-probe" in installed["scripts"], service

    # Only this service's dependencies: no other service's package, no development tool
    distributions = set(installed["distributions"])
    others = {f"antrian-{other}" for other in FOLDERS if other != folder}
    assert {"antrian", f"antrian-{folder}"} <= distributions
    assert not distributions & others, sorted(distributions & others)
    assert not distributions & DEV_TOOLS, sorted(distributions & DEV_TOOLS)
    if folder != "sync-api":
        assert not distributions & {"flask", "gunicorn"}, "only sync-api serves HTTP through Flask and gunicorn"


def test_the_venv_python_is_the_images_python_version():
    [image] = {argument.split("=", 1)[1] for folder in FOLDERS for keyword, argument in instructions(dockerfile(folder))
               if keyword == "ARG" and argument.startswith("PYTHON_IMAGE=")}
    version = re.match(r"python:(\d+\.\d+)", image)[1]
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == version, (
        f"the images run Python {version}, these tests {sys.version.split()[0]}: the entry points are exercised "
        "on another Python than the images'")


def test_sync_api_answers_health_and_readiness_then_stops_cleanly_on_sigterm(clean, services, tmp_path):
    port, metrics_port = free_ports(2)
    url = f"http://127.0.0.1:{port}"
    web, venv = start_in_image("sync-api", services, tmp_path, ready_url=f"{url}/healthz", PORT=str(port),
                               METRICS_PORT=str(metrics_port))

    # The entry point execs gunicorn: the process that gets SIGTERM is the server, from the image's venv
    command_line = web.executable()
    assert command_line[0].startswith(str(venv)) and "gunicorn" in command_line, command_line
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    wait_until(lambda: http_ok(f"{url}/readyz"), timeout=30, what=f"sync-api's /readyz\n{web.log()[-3000:]}")
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 404  # on METRICS_PORT only
    assert requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).status_code == 200

    web.stop_cleanly(grace_seconds("sync-api"))


@pytest.mark.parametrize("service", ["sync-worker", "mailer", "booking-expiry"])
def test_each_worker_serves_metrics_and_passes_its_health_check_then_stops_cleanly_on_sigterm(
    service, clean, services, tmp_path
):
    port = free_port()
    worker, venv = start_in_image(service, services, tmp_path, ready_url=f"http://127.0.0.1:{port}/metrics",
                                  METRICS_PORT=str(port), ANTRIAN_HEARTBEAT_INTERVAL_S="0.5")

    # The entry point execs dramatiq: the process that gets SIGTERM is Dramatiq's, from the image's venv
    command_line = worker.executable()
    assert command_line[0].startswith(str(venv)) and "dramatiq" in command_line, command_line

    # Compose's health check, from the same venv with the same TMPDIR: every worker process consumes
    probe, *arguments = compose_services()[service]["healthcheck"]["test"][1:]
    check = [str(venv / "bin" / probe), *arguments]

    def healthy() -> bool:
        return subprocess.run(check, env=worker.env, capture_output=True, timeout=30).returncode == 0

    wait_until(healthy, timeout=30, interval=0.5, what=f"{' '.join(arguments)} to pass\n{worker.log()[-3000:]}")

    worker.stop_cleanly(grace_seconds(service))


def test_the_scheduler_enqueues_the_sweep_then_stops_cleanly_on_sigterm(clean, services, tmp_path):
    scheduler, venv = start_in_image("booking-expiry-scheduler", services, tmp_path)
    wait_until(lambda: "task_enqueued" in scheduler.log() or scheduler.process.poll() is not None, timeout=30,
               what=f"the scheduler to enqueue the sweep\n{scheduler.log()[-3000:]}")
    assert scheduler.process.poll() is None, scheduler.log()[-3000:]
    assert scheduler.executable()[0].startswith(str(venv))

    scheduler.stop_cleanly(grace_seconds("booking-expiry-scheduler"))
    assert "scheduler stopped" in scheduler.log()


def test_the_migration_step_exits_0_on_a_migrated_database(clean, services, tmp_path):
    migrate, _venv = start_in_image("migrate", services, tmp_path)
    try:
        code = migrate.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"migrate still runs after 60 s:\n{migrate.log()[-3000:]}") from None
    assert code == 0, migrate.log()[-3000:]
