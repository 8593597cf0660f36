"""The services' Dockerfiles and .dockerignore, read as text (no Docker engine here): each image is built the
same way, from its own service's dependencies only, runs as uid 10001 with its command in exec form, and
holds every command compose, Kubernetes and operators run it with. tests/deploy/test_entrypoints.py builds
each image's virtual environment the same way and starts those commands for real."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from antrian.config import DEFAULT_METRICS_PORTS, Settings
from tests.support import ROOT

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

#: The folder of each service under services/, each with its Dockerfile.
FOLDERS = ("sync-api", "mailer", "booking-expiry")
#: What each image serves on: sync-api's PORT and metrics (and sync-worker's metrics: one image), the workers'.
EXPOSED = {
    "sync-api": {Settings().port, DEFAULT_METRICS_PORTS["sync-api"], DEFAULT_METRICS_PORTS["sync-worker"]},
    "mailer": {DEFAULT_METRICS_PORTS["mailer"]},
    "booking-expiry": {DEFAULT_METRICS_PORTS["booking-expiry"]},
}
#: The command each image runs when given none (ENTRYPOINT, or CMD for sync-api whose CMD compose replaces
#: with sync-worker), in exec form so that SIGTERM reaches it.
DEFAULT_COMMAND = {"sync-api": ("CMD", ["sync-api"]), "mailer": ("ENTRYPOINT", ["mailer"]),
                   "booking-expiry": ("ENTRYPOINT", ["booking-expiry"])}
#: Names that would be secrets if an image set them.
SECRET_WORDS = re.compile(r"TOKEN|PASSWORD|SECRET|KEY|PASS\b", re.IGNORECASE)


def dockerfile(folder: str) -> Path:
    return ROOT / "services" / folder / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        found.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return found


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions (FROM included) by the stage's name."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in instructions(path):
        if keyword == "FROM":
            current = found.setdefault(arguments.split()[-1], [])
        current.append((keyword, arguments))
    return found


def exec_form(path: Path, keyword: str) -> list[str] | None:
    """The runtime stage's ENTRYPOINT or CMD (the last one counts) as a list; fails unless in exec form."""
    found = [arguments for name, arguments in stages(path)["runtime"] if name == keyword]
    if not found:
        return None
    command = json.loads(found[-1])  # shell form ("sync-api --x") is not JSON: SIGTERM would go to /bin/sh
    assert isinstance(command, list) and all(isinstance(part, str) for part in command), found[-1]
    return command


def runtime_environment(path: Path) -> dict[str, str]:
    """The ENV the runtime stage sets (``KEY=value`` pairs)."""
    pairs = " ".join(arguments for keyword, arguments in stages(path)["runtime"] if keyword == "ENV")
    return dict(pair.split("=", 1) for pair in shlex.split(pairs))


def build_copies(path: Path) -> list[str]:
    """The sources the build stage copies from the build context, in order."""
    copies = []
    for keyword, arguments in stages(path)["build"]:
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, _destination = arguments.split()
            copies.extend(sources)
    return copies


def pip_wheel_arguments(path: Path) -> list[str]:
    """What the build stage's ``pip wheel`` builds: the local projects (``./shared``, ``./services/<name>``)."""
    [build] = [arguments for keyword, arguments in stages(path)["build"]
               if keyword == "RUN" and "pip wheel" in arguments]
    words = build.split("pip wheel", 1)[1].split("&&", 1)[0].split()
    return [word for word in words if word.startswith("./")]


def console_scripts(pyproject: Path) -> set[str]:
    return set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))


def image_commands(folder: str) -> set[str]:
    """Every command the image's venv must hold: shared's (antrian, antrian-worker-probe) and the service's."""
    return console_scripts(ROOT / "shared" / "pyproject.toml") | console_scripts(
        ROOT / "services" / folder / "pyproject.toml")


# ---- .dockerignore, as Docker reads it (moby/patternmatcher) -------------------------------------------


def _pattern(text: str) -> re.Pattern:
    """A .dockerignore pattern as a regular expression: ``*`` and ``?`` stay within a path segment, ``**``
    spans any number of them (``**/`` none too)."""
    regex, index = "", 0
    while index < len(text):
        char = text[index]
        if text.startswith("**", index):
            index += 2
            if text.startswith("/", index):
                index += 1
            regex += ".*" if index >= len(text) else "(.*/)?"
            continue
        regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
        index += 1
    return re.compile(f"^{regex}$")


def dockerignore_rules(path: Path = ROOT / ".dockerignore") -> list[tuple[bool, re.Pattern]]:
    """(is an exception ``!``, pattern) of each line, in order."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        cleaned = line.lstrip("!").strip().strip("/")
        rules.append((exception, _pattern(cleaned)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern]] | None = None) -> bool:
    """Whether the file at ``relative`` (to the repository root) is sent to Docker as build context: the last
    rule matching it or one of its parent folders decides."""
    rules = dockerignore_rules() if rules is None else rules
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for exception, pattern in rules:
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not exception
    return not excluded


def context_files(sources: list[str]) -> list[str]:
    """The files under ``sources`` (files or folders of the repository) that the build context holds."""
    rules = dockerignore_rules()
    found = []
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())
        found.extend(relative for item in files if in_context(relative := item.relative_to(ROOT).as_posix(), rules))
    return found


# ---- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_two_stage_build_on_a_pinned_slim_python_that_copies_only_what_the_service_needs(folder):
    steps = instructions(dockerfile(folder))
    arguments = dict(argument.split("=", 1) for keyword, argument in steps if keyword == "ARG" and "=" in argument)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", arguments["PYTHON_IMAGE"]), arguments["PYTHON_IMAGE"]
    assert [argument for keyword, argument in steps if keyword == "FROM"] == [
        "${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]

    copies = [argument for keyword, argument in steps if keyword == "COPY"]
    assert copies == ["constraints.txt ./", "shared/ shared/", f"services/{folder}/ services/{folder}/",
                      "--from=build /opt/venv /opt/venv"]
    assert not any(keyword == "ADD" for keyword, _ in steps)
    # The service's own dependencies only, pinned: shared and this service, with constraints.txt
    [build] = [argument for keyword, argument in steps if keyword == "RUN" and "pip wheel" in argument]
    assert pip_wheel_arguments(dockerfile(folder)) == ["./shared", f"./services/{folder}"]
    assert build.count("-c constraints.txt") == 2, "both the wheels and the install are pinned by constraints.txt"
    assert "--no-index --find-links /wheels" in build, "the venv holds exactly the wheels that were built"
    assert "requirements-dev" not in build


def test_every_image_is_built_on_the_same_python():
    images = {folder: dict(argument.split("=", 1) for keyword, argument in instructions(dockerfile(folder))
                           if keyword == "ARG" and "=" in argument)["PYTHON_IMAGE"] for folder in FOLDERS}
    assert len(set(images.values())) == 1, images


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_runtime_runs_as_uid_10001_unbuffered_with_metrics_under_tmp_and_no_secrets(folder):
    runtime = stages(dockerfile(folder))["runtime"]
    assert ("USER", "10001:10001") in runtime
    assert any(keyword == "RUN" and "--uid 10001" in argument for keyword, argument in runtime)
    environment = runtime_environment(dockerfile(folder))
    assert environment["PYTHONUNBUFFERED"] == "1"
    assert environment["PROMETHEUS_MULTIPROC_BASE"] == "/tmp", "the metrics folder must be on the writable /tmp"
    assert environment["PATH"].startswith("/opt/venv/bin:"), "the image's commands are the venv's"

    for keyword, argument in instructions(dockerfile(folder)):
        if keyword in {"ENV", "ARG"}:
            names = [pair.split("=", 1)[0] for pair in shlex.split(argument)]
            assert not any(SECRET_WORDS.search(name) for name in names), f"{folder}: {keyword} {argument}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_command_is_in_exec_form_and_every_command_the_image_is_run_with_is_installed(folder):
    keyword, command = DEFAULT_COMMAND[folder]
    assert exec_form(dockerfile(folder), keyword) == command, "exec form, so SIGTERM reaches the process"
    other = "CMD" if keyword == "ENTRYPOINT" else "ENTRYPOINT"
    assert exec_form(dockerfile(folder), other) is None
    exposed = {int(port) for keyword, argument in instructions(dockerfile(folder)) if keyword == "EXPOSE"
               for port in argument.split()}
    assert exposed == EXPOSED[folder]

    # antrian and antrian-worker-probe (shared) and the service's own commands: the build fails without one
    commands = image_commands(folder)
    assert {"antrian", "antrian-worker-probe", command[0]} <= commands
    [build] = [argument for keyword, argument in instructions(dockerfile(folder))
               if keyword == "RUN" and "pip wheel" in argument]
    for name in commands:
        assert f"test -x /opt/venv/bin/{name}" in build, f"the build checks that {name} is installed"


def test_booking_expiry_runs_its_scheduler_and_the_schedule_command_from_the_same_image():
    # booking-expiry-scheduler (compose) and `antrian schedule run` (the CronJob) run from the same image
    assert {"booking-expiry", "booking-expiry-scheduler"} <= console_scripts(
        ROOT / "services" / "booking-expiry" / "pyproject.toml")
    assert "antrian" in console_scripts(ROOT / "shared" / "pyproject.toml")


def test_the_dockerignore_patterns_match_as_docker_matches_them():
    rules = [(False, _pattern("*")), (True, _pattern("shared")), (False, _pattern("**/build"))]
    assert not in_context("README.md", rules)
    assert in_context("shared/antrian/cli.py", rules)
    assert not in_context("shared/build/lib/antrian/cli.py", rules)
    assert not in_context("build/x", rules)
    assert _pattern("**/*.pyc").match("a.pyc") and _pattern("**/*.pyc").match("a/b/c.pyc")
    assert not _pattern("*.pyc").match("a/b.pyc")


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_build_context_holds_every_file_the_image_copies_and_nothing_a_local_build_left(folder):
    sources = [source.rstrip("/") for source in build_copies(dockerfile(folder))]
    tracked = subprocess.run(["git", "ls-files", "--", *sources], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
    assert tracked, "git ls-files found nothing to check"
    missing = [path for path in tracked if not in_context(path)]
    assert not missing, f".dockerignore leaves out files the image copies: {missing}"

    for path in context_files(sources):
        parts = path.split("/")
        assert not {"build", "dist", "__pycache__", ".venv"} & set(parts), path
        assert not any(part.endswith(".egg-info") for part in parts) and not path.endswith(".pyc"), path


def test_the_build_context_leaves_out_everything_the_images_do_not_copy():
    for path in (".venv/bin/python", ".git/HEAD", "var/test-venvs/x", "tests/support.py", "k8s/base/a.yaml",
                 "docker-compose.yml", "README.md", ".env", "deploy/compose/prometheus.yml",
                 "shared/antrian.egg-info/PKG-INFO", "shared/build/lib/antrian/cli.py",
                 "services/mailer/mailer/__pycache__/entry.cpython-311.pyc"):
        assert not in_context(path), path
    for path in ("constraints.txt", "shared/pyproject.toml", "services/mailer/mailer/templates/invoice.html"):
        assert in_context(path), path


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_classic_builder_builds_it_too(folder):
    # Debian's engine (docker.io 20.10) and many air-gapped farms have no BuildKit: no `# syntax=` frontend to
    # pull, no RUN --mount (make images builds with whichever builder is there; make test-images builds for real).
    text = dockerfile(folder).read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    runs = [argument for keyword, argument in instructions(dockerfile(folder)) if keyword == "RUN"]
    assert not [run for run in runs if run.startswith("--")], "RUN --mount/--network need BuildKit"
