"""docker-compose.yml run for real (make test-images), with deploy/compose/docker-compose.host.yml: the antrian
services from the images `make images` built, on the host's network, against this machine's PostgreSQL and
RabbitMQ (the tests' database and vhost) and the tests' SMTP server, in place of the images no registry gives
here. A booking made through the containerised sync-api reaches the SMTP server through the containerised
mailer, and a sync run completes through the containerised sync-worker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import text

from tests.images.containers import DOCKER, VERSION
from tests.support import API_TOKEN, BROKER_URL, DATABASE_URL, ROOT, free_ports, http_ok, wait_until

pytestmark = pytest.mark.images

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
OVERRIDE = ROOT / "deploy" / "compose" / "docker-compose.host.yml"
SERVICES = ["sync-api", "sync-worker", "mailer", "booking-expiry", "booking-expiry-scheduler"]


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where present, else Debian's docker-compose 1.29."""
    if subprocess.run([DOCKER, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [DOCKER, "compose"]
    return ["docker-compose"]


def compose_file(tmp_path: Path, command: list[str]) -> Path:
    """docker-compose.yml as compose reads it here. Compose v1 knows neither the top-level `name:` (given as -p
    instead) nor published `ports:` beside network_mode: host (which they would mean nothing on): both are left
    out for it, nothing else."""
    if command[0] != "docker-compose":
        return ROOT / "docker-compose.yml"
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    document.pop("name", None)
    for service in document["services"].values():
        service.pop("ports", None)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_compose_brings_up_antrian_on_this_machines_servers(clean, engine, smtp_server, tmp_path, request):
    command = compose_command()
    project = f"antrian-test-{os.getpid()}"
    names = ("SYNC_API_PORT", "SYNC_API_METRICS_PORT", "SYNC_WORKER_METRICS_PORT", "MAILER_METRICS_PORT",
             "BOOKING_EXPIRY_METRICS_PORT", "DEV_SCHOOL_API_PORT", "DEV_PAYMENT_GATEWAY_PORT")
    # Distinct ports: two services given one port would leave the second restarting behind a healthy first.
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DOCKER": DOCKER,
        "ANTRIAN_VERSION": VERSION, "DATABASE_URL": DATABASE_URL, "BROKER_URL": BROKER_URL, "API_TOKEN": API_TOKEN,
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_server.port),
        "UPSTREAM_BASE_URL": f"http://127.0.0.1:{ports['DEV_SCHOOL_API_PORT']}",
        "PAYMENT_API_BASE_URL": f"http://127.0.0.1:{ports['DEV_PAYMENT_GATEWAY_PORT']}",
        "EXPIRY_SWEEP_SECONDS": "60",
        **{name: str(port) for name, port in ports.items()},
    }
    files = ["-f", str(compose_file(tmp_path, command)), "-f", str(OVERRIDE)]
    base = [*command, "-p", project, "--project-directory", str(ROOT), *files]

    def compose(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*base, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert not check or result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    try:
        compose("config", "-q")
        compose("up", "-d", "--no-build", *SERVICES, timeout=600)
        web = f"http://127.0.0.1:{ports['SYNC_API_PORT']}"
        wait_until(lambda: http_ok(f"{web}/readyz"), timeout=120, what="the compose sync-api's /readyz")

        # A booking through the containerised sync-api; its invoice through the containerised mailer
        tour = requests.post(f"{web}/api/tours", headers=AUTH, timeout=10, json={
            "name": "Toba", "quota": 10, "price": 500000, "starts_at": "2030-02-01T08:00:00+07:00"})
        assert tour.status_code == 201, tour.text
        booking = requests.post(f"{web}/api/bookings", headers=AUTH, timeout=10, json={
            "tour_id": tour.json()["id"], "quantity": 1, "customer_name": "Ayu", "customer_email": "ayu@example.com"})
        assert booking.status_code == 201, booking.text
        try:
            wait_until(lambda: any(booking.json()["code"] in message.as_string() for message in smtp_server.messages),
                       timeout=90, interval=0.5, what="the invoice at the SMTP server")
        except AssertionError as missing:  # the failure's own text says why: CI shows the summary, not the output
            states = compose("ps", check=False).stdout
            mailer = compose("logs", "--no-color", "--tail", "20", "mailer", check=False).stdout
            raise AssertionError(f"{missing}\n{states}\n{mailer[-3000:]}") from None

        # A sync run through the containerised sync-worker, against the development school API's container
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO students (idperson, name) SELECT n, 'Siswa ' || n "
                                    "FROM generate_series(1, 20) AS n"))
        run = requests.post(f"{web}/api/sync-runs", headers=AUTH, timeout=10)
        assert run.status_code == 202, run.text

        def finished() -> dict | None:
            state = requests.get(f"{web}/api/sync-runs/{run.json()['id']}", headers=AUTH, timeout=10).json()
            return state if not state["isRunning"] else None

        state = wait_until(finished, timeout=180, interval=1, what="the sync run to finish")
        assert state["processed"] == state["total"] == 20, state
        # The workers' healthchecks, as docker-compose.yml declares them, report healthy
        for service in ("sync-worker", "mailer", "booking-expiry"):
            container = compose("ps", "-q", service).stdout.strip()
            wait_until(lambda container=container: subprocess.run(
                [DOCKER, "inspect", "-f", "{{.State.Health.Status}}", container], capture_output=True, text=True,
                timeout=30).stdout.strip() == "healthy", timeout=120, interval=1, what=f"{service} healthy")
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(compose("logs", "--no-color", "--tail", "60", check=False).stdout[-15000:])
        compose("down", "-v", "--remove-orphans", "-t", "30", check=False, timeout=300)
