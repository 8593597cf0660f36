"""booking-expiry's Dockerfile, read as text (no Docker engine here): built like the mailer's, and able to
run the three commands compose and Kubernetes start it with."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from antrian.config import DEFAULT_METRICS_PORTS

from ..support import ROOT

DOCKERFILE = ROOT / "services" / "booking-expiry" / "Dockerfile"


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


def console_scripts(pyproject: Path) -> set[str]:
    return set(tomllib.loads(pyproject.read_text())["project"]["scripts"])


def test_a_two_stage_build_on_a_pinned_slim_python_that_copies_only_what_the_service_needs():
    steps = instructions(DOCKERFILE)
    arguments = dict(argument.split("=", 1) for keyword, argument in steps if keyword == "ARG" and "=" in argument)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", arguments["PYTHON_IMAGE"]), arguments["PYTHON_IMAGE"]
    assert [argument for keyword, argument in steps if keyword == "FROM"] == [
        "${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]

    copies = [argument for keyword, argument in steps if keyword == "COPY"]
    assert copies == ["constraints.txt ./", "shared/ shared/", "services/booking-expiry/ services/booking-expiry/",
                      "--from=build /opt/venv /opt/venv"]
    assert not any(keyword == "ADD" for keyword, _ in steps)


def test_the_runtime_runs_as_uid_10001_unbuffered_with_metrics_under_tmp():
    steps = instructions(DOCKERFILE)
    runtime = steps[max(index for index, (keyword, _) in enumerate(steps) if keyword == "FROM"):]
    assert ("USER", "10001:10001") in runtime
    assert any(keyword == "RUN" and "--uid 10001" in argument for keyword, argument in runtime)
    environment = " ".join(argument for keyword, argument in runtime if keyword == "ENV").split()
    assert "PYTHONUNBUFFERED=1" in environment
    assert "PROMETHEUS_MULTIPROC_BASE=/tmp" in environment, "the metrics folder must be on the writable /tmp"


def test_the_entrypoint_is_the_worker_in_exec_form_and_the_other_commands_are_installed():
    steps = instructions(DOCKERFILE)
    [entrypoint] = [argument for keyword, argument in steps if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["booking-expiry"], "exec form, so SIGTERM reaches the worker"
    assert [argument for keyword, argument in steps if keyword == "EXPOSE"] == [
        str(DEFAULT_METRICS_PORTS["booking-expiry"])]

    # booking-expiry-scheduler (compose) and `antrian schedule run` (the CronJob) run from the same image
    assert {"booking-expiry", "booking-expiry-scheduler"} <= console_scripts(
        ROOT / "services" / "booking-expiry" / "pyproject.toml")
    assert "antrian" in console_scripts(ROOT / "shared" / "pyproject.toml")
    [build] = [argument for keyword, argument in steps if keyword == "RUN" and "pip wheel" in argument]
    for command in ("booking-expiry", "booking-expiry-scheduler", "antrian"):
        assert f"test -x /opt/venv/bin/{command}" in build, f"the build checks that {command} is installed"
