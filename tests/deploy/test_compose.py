"""docker-compose.yml, checked offline (no Docker engine here): the Compose Specification's schema, the
start order, and every setting a service gets being one antrian reads, valid with nothing in the shell."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from antrian.config import DEFAULT_METRICS_PORTS, load_settings
from antrian.workers import SHUTDOWN_TIMEOUT_MS
from booking_expiry.actors import SWEEP_TIME_LIMIT_MS

from ..support import ROOT
from . import SETTING_NAMES

COMPOSE = ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent
#: Variables an antrian service may be given beyond antrian's settings, and why. None so far.
EXTRAS: dict[str, str] = {}
#: What each antrian service cannot start without (the `require` of its entry point).
REQUIRED = {"sync-api": {"API_TOKEN"}, "sync-worker": {"UPSTREAM_BASE_URL"}}
#: ${NAME}, ${NAME:-default}, ${NAME-default}: Compose's interpolation.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def ours(services: dict[str, dict]) -> dict[str, dict]:
    """The services that run an image built from this repository."""
    return {name: service for name, service in services.items() if "build" in service}


def interpolate(value: str, shell: dict[str, str]) -> str:
    """What Compose makes of ``value`` with ``shell`` as the environment (only the forms used here)."""
    def substitute(match: re.Match) -> str:
        name, op, default = match["name"], match["op"], match["default"]
        if op == ":-":
            return shell.get(name) or default
        if op == "-":
            return shell.get(name, default)
        return shell.get(name, "")

    return INTERPOLATION.sub(substitute, value)


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_the_file_follows_the_compose_specification():
    checker = BIN / "check-jsonschema"
    assert checker.exists(), "check-jsonschema is missing: install requirements-dev.txt"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_system_is_there(services):
    assert {"rabbitmq", "postgres", "mailpit", "migrate", "sync-api", "sync-worker", "mailer", "booking-expiry",
            "booking-expiry-scheduler"} <= set(services)
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["postgres"]["image"] == "postgres:16"
    assert re.fullmatch(r"axllent/mailpit:v\d+\.\d+\.\d+", services["mailpit"]["image"])


def test_each_service_starts_once_what_it_needs_is_healthy_or_done(services):
    for name, service in services.items():
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on {needed}, which is not defined"
            condition = condition["condition"]
            if needed == "migrate":
                assert condition == "service_completed_successfully", name
            else:
                assert condition == "service_healthy", f"{name} waits for {needed} to be {condition}"
                assert "healthcheck" in services[needed], f"{name} waits for {needed}, which has no healthcheck"

    # Every antrian service waits for the schema and the broker; the schema waits for PostgreSQL
    for name, service in ours(services).items():
        if name not in {"migrate", "dev-school-api"}:
            assert {"migrate", "rabbitmq"} <= set(service["depends_on"]), name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["antrian", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert "mailpit" in services["mailer"]["depends_on"]


def test_images_are_built_from_each_services_dockerfile_with_the_repository_as_context(services):
    built = ours(services)
    dockerfiles = {service["build"]["dockerfile"] for service in built.values()}
    assert dockerfiles == {f"services/{name}/Dockerfile" for name in ("sync-api", "mailer", "booking-expiry")}
    for name, service in built.items():
        assert service["build"]["context"] == ".", name
        assert (ROOT / service["build"]["dockerfile"]).is_file(), name
    # One image per Dockerfile, whichever services run it
    images = {}
    for service in built.values():
        images.setdefault(service["build"]["dockerfile"], set()).add(service["image"])
    assert all(len(names) == 1 for names in images.values()), images
    assert services["migrate"]["image"] == services["sync-api"]["image"] == services["sync-worker"]["image"]


def test_booking_expiry_and_its_scheduler_run_from_one_image(services):
    worker, scheduler = services["booking-expiry"], services["booking-expiry-scheduler"]
    assert worker["image"] == scheduler["image"]
    assert "entrypoint" not in worker and worker["command"][:1] == ["--processes"], "the image's ENTRYPOINT runs"
    assert scheduler["entrypoint"] == ["booking-expiry-scheduler"]
    port = DEFAULT_METRICS_PORTS["booking-expiry"]
    assert worker["environment"]["METRICS_PORT"] == str(port)
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert "EXPIRY_SWEEP_SECONDS" in scheduler["environment"]
    # Stopping the worker lets a sweep run out its time limit; every worker outlasts Dramatiq's shutdown
    assert seconds(worker["stop_grace_period"]) > SWEEP_TIME_LIMIT_MS / 1000
    for name in ("sync-worker", "mailer", "booking-expiry"):
        assert seconds(services[name]["stop_grace_period"]) > SHUTDOWN_TIMEOUT_MS / 1000, name


def test_every_variable_an_antrian_service_gets_is_a_setting_antrian_reads(services):
    for name, service in ours(services).items():
        unknown = set(service.get("environment", {})) - SETTING_NAMES - set(EXTRAS)
        assert not unknown, f"{name} sets {sorted(unknown)}, which no antrian setting reads"


def test_with_nothing_in_the_shell_every_service_gets_valid_settings_and_only_development_secrets(services):
    text = COMPOSE.read_text()
    for match in INTERPOLATION.finditer(text):
        assert match["op"] == ":-", f"{match[0]} has no default: `docker compose up` must work with an empty shell"

    for name, service in ours(services).items():
        environment = {key: interpolate(str(value), {}) for key, value in service.get("environment", {}).items()}
        settings = load_settings(environment)  # raises ConfigError naming the variable on a bad value
        for required in REQUIRED.get(name, ()):
            assert settings.require(required.lower()), name
        for secret in ("API_TOKEN", "PAYMENT_SERVER_KEY"):
            if secret in environment:
                assert environment[secret].startswith("dev-"), f"{secret}'s default must say it is for development"

    # A value from the shell wins over the default
    sync_api = services["sync-api"]["environment"]
    assert interpolate(sync_api["API_TOKEN"], {"API_TOKEN": "from-the-shell"}) == "from-the-shell"


def test_ports_are_published_on_loopback_only(services):
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    published = {port for service in services.values() for port in service.get("ports", [])}
    assert {"127.0.0.1:8000:8000", "127.0.0.1:8025:8025"} <= published
