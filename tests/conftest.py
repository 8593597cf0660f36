"""Fixtures: the real PostgreSQL and RabbitMQ (an isolated database and vhost), and real processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from antrian.db.migrate import upgrade
from tests.smtp import SmtpServer
from tests.support import (
    API_TOKEN,
    BIN,
    BROKER_URL,
    DATABASE_URL,
    ROOT,
    TEST_DATABASE,
    TEST_VHOST,
    Service,
    base_env,
    free_port,
    free_ports,
    purge_queues,
    show_output_if_failed,
)

#: Headless Chromium's ``browser`` and ``page`` fixtures, for the admin pages' tests.
pytest_plugins = ["tests.browser"]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[None]:
    """A fresh test database (migrated by the real code) and a fresh RabbitMQ vhost.

    PostgreSQL and RabbitMQ must be running (``make test`` starts them); nothing is skipped.
    """
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {TEST_DATABASE}"))
    except Exception as exc:  # noqa: BLE001
        pytest.exit(f"PostgreSQL is not reachable on 127.0.0.1:5432 (run `make services`): {exc}", returncode=3)
    finally:
        admin.dispose()
    upgrade(DATABASE_URL)
    _rabbitmqctl("delete_vhost", TEST_VHOST)
    _rabbitmqctl("add_vhost", TEST_VHOST)
    _rabbitmqctl("set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*")
    yield
    _rabbitmqctl("delete_vhost", TEST_VHOST)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(infrastructure) -> Iterator[Engine]:
    engine = create_engine(DATABASE_URL, pool_pre_ping=True)
    yield engine
    engine.dispose()


#: Every table a test may fill.
TABLES = (
    "students", "sync_runs", "sync_items", "tours", "bookings", "payments", "outbox", "email_deliveries",
    "scheduled_task_runs", "failed_jobs", "failed_job_actions",
    "idempotency_keys", "message_wait_counts", "paused_queues", "rate_limits",
    "operator_tokens", "admin_sessions", "login_failures", "audit_events",
)


@pytest.fixture
def clean(engine: Engine) -> Engine:
    """Empty tables and queues before the test."""
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    purge_queues()
    return engine


@pytest.fixture
def services(tmp_path, request) -> Iterator[list[Service]]:
    """Every process a test starts; stopped afterwards, logs printed when the test failed."""
    started: list[Service] = []
    yield started
    for service in started:  # all stop at once: a test's teardown waits for the slowest, not the sum
        service.terminate()
    for service in started:
        service.stop()
    show_output_if_failed(request, {f"{service.name} log": service.log for service in started})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def start_school_api(services, tmp_path):
    """Start the development school API with its flags; returns its base URL."""

    def start(*flags: str) -> str:
        port = free_port()
        service = Service(
            f"school-api-{port}",
            [str(BIN / "python"), str(ROOT / "dev" / "school_api.py"), "--port", str(port), *flags],
            base_env(), tmp_path,
            ready_url=f"http://127.0.0.1:{port}/healthz",
        )
        services.append(service.start())
        return f"http://127.0.0.1:{port}"

    return start


@pytest.fixture
def start_dramatiq(services, tmp_path):
    """Start a real Dramatiq worker command (``sync-worker``, ``mailer``); returns the Service (``.metrics_url``)."""

    def start(command: str, *, processes: int = 1, threads: int = 8, **env: str) -> Service:
        port = free_port()
        service = Service(
            f"{command}-{port}",
            [str(BIN / command), "--processes", str(processes), "--threads", str(threads)],
            base_env(METRICS_PORT=str(port), **env),
            tmp_path,
            ready_url=f"http://127.0.0.1:{port}/metrics",
        )
        service.metrics_url = f"http://127.0.0.1:{port}/metrics"
        services.append(service.start(timeout=60))
        return service

    return start


@pytest.fixture
def start_worker(start_dramatiq):
    """Start a real sync-worker against the school API at ``upstream``."""

    def start(upstream: str, *, processes: int = 1, threads: int = 8, **env: str) -> Service:
        return start_dramatiq("sync-worker", processes=processes, threads=threads, UPSTREAM_BASE_URL=upstream, **env)

    return start


class WebUrl(str):
    """sync-api's base URL; ``.metrics`` is its ``/metrics`` on METRICS_PORT (not on the API's port)."""

    metrics: str


@pytest.fixture
def start_web(services, tmp_path):
    """Start sync-api under gunicorn; returns its base URL (a :class:`WebUrl`, with ``.metrics``)."""

    def start(**env: str) -> WebUrl:
        port, metrics_port = free_ports(2)
        service = Service(
            f"sync-api-{port}", [str(BIN / "sync-api"), "--workers", "2"],
            base_env(PORT=str(port), **{"METRICS_PORT": str(metrics_port), **env}), tmp_path,
            ready_url=f"http://127.0.0.1:{port}/healthz",
        )
        services.append(service.start())
        url = WebUrl(f"http://127.0.0.1:{port}")
        url.metrics = f"http://127.0.0.1:{env.get('METRICS_PORT', metrics_port)}/metrics"
        return url

    return start


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it accepts and can be told to refuse."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


__all__ = ["BROKER_URL"]
