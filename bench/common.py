"""What every benchmark part shares: the bench database and vhost, real processes, polling and memory sampling.

Everything here talks to 127.0.0.1 only and every process it starts is registered, so that
:func:`stop_all` can end them all (whole process groups) even when a part fails half-way.
"""

from __future__ import annotations

import ctypes
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pika
import requests
from sqlalchemy import Engine, create_engine, text

from tests import support
from tests.support import free_port, free_ports, http_ok, wait_until  # noqa: F401 - the parts use them from here

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS_DIR = ROOT / "bench" / "results"

DATABASE = "antrian_bench"
DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
ADMIN_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VHOST = "antrian_bench"
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
API_TOKEN = "bench-token-0123456789-0123456789-abc"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SYNC_QUEUES = ("sync-pembayaran", "sync-pembayaran.DQ", "sync-pembayaran.XQ")
EMAIL_QUEUES = ("emails", "emails.DQ", "emails.XQ")

#: Where this invocation's process logs go (set by :func:`set_log_dir`).
_log_dir: Path = RESULTS_DIR / "logs"
#: Every process started and not yet stopped, so that :func:`stop_all` can end it.
_running: list[Service] = []


def log(message: str) -> None:
    """A progress line on stderr, so stdout keeps only the results table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def set_log_dir(path: Path) -> None:
    global _log_dir
    path.mkdir(parents=True, exist_ok=True)
    _log_dir = path


def log_path(name: str) -> Path:
    """A file of this invocation's log folder."""
    return _log_dir / name


# --------------------------------------------------------------------------- infrastructure


def recreate_database(name: str) -> None:
    """Drop database ``name`` (whoever is connected) and create it empty."""
    admin = create_engine(ADMIN_DATABASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()


def reset_database() -> None:
    """Drop and create ``antrian_bench``, then migrate it with the product's own migrations."""
    from antrian.db.migrate import upgrade

    recreate_database(DATABASE)
    upgrade(DATABASE_URL)


def reset_vhost() -> None:
    """Delete and create the ``antrian_bench`` vhost, so no queue of dev or test data is touched."""
    for args in (
        ("delete_vhost", VHOST),
        ("add_vhost", VHOST),
        ("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"),
    ):
        result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0 and args[0] != "delete_vhost":
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")


def make_engine() -> Engine:
    return create_engine(DATABASE_URL, pool_size=6, max_overflow=2)


def clear_data(engine: Engine) -> None:
    """Empty every table and the sync queues: each part starts from nothing."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE students, sync_runs, sync_items RESTART IDENTITY CASCADE"))
    purge_queues(SYNC_QUEUES)


def clear_bookings(engine: Engine) -> None:
    """Empty the booking tables (tours, bookings, their payments, email deliveries, the outbox) and the email
    queues: parts (e) and (f) start from nothing and leave nothing behind."""
    with engine.begin() as connection:
        connection.execute(
            text("TRUNCATE tours, bookings, payments, email_deliveries, outbox RESTART IDENTITY CASCADE")
        )
    purge_queues(EMAIL_QUEUES)


def seed(engine: Engine, count: int) -> None:
    """``count`` demo students, inserted by the product's own seeding, then VACUUM ANALYZE."""
    from antrian.cli.demo import seed_students

    started = time.perf_counter()
    added = seed_students(engine, count)
    if added != count:
        raise RuntimeError(f"seeded {added} students instead of {count}")
    vacuum(engine, "students")
    log(f"seeded {count} students in {time.perf_counter() - started:.1f}s")


def vacuum(engine: Engine, *tables: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in tables:
            connection.execute(text(f"VACUUM ANALYZE {table}"))


def amqp_connection() -> pika.BlockingConnection:
    parameters = pika.URLParameters(BROKER_URL)
    parameters.socket_timeout = 10
    parameters.blocked_connection_timeout = 30
    return pika.BlockingConnection(parameters)


def purge_queues(queues) -> None:
    support.purge_queues(queues, BROKER_URL)


def delete_queues(queues) -> None:
    connection = amqp_connection()
    try:
        for queue in queues:
            connection.channel().queue_delete(queue)
    finally:
        if connection.is_open:
            connection.close()


def queue_depth(queue: str) -> int:
    return support.queue_depth(queue, BROKER_URL)


# --------------------------------------------------------------------------- processes


def base_env(**overrides: str) -> dict[str, str]:
    """The environment of every process: bench database and vhost, loopback only, quiet logs."""
    settings = {"PROMETHEUS_MULTIPROC_BASE": str(_log_dir), "dramatiq_prom_host": "127.0.0.1", "LOG_LEVEL": "info"}
    return support.process_env(
        database_url=DATABASE_URL, broker_url=BROKER_URL, api_token=API_TOKEN, **{**settings, **overrides}
    )


class Service(support.Service):
    """A test-suite Service, logged under this run's folder, registered until stopped, and sent
    SIGTERM if the bench itself dies."""

    popen_options = {"preexec_fn": lambda: _die_with_parent()}

    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready_url: str | None = None) -> None:
        super().__init__(name, argv, env, _log_dir, ready_url)

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout: float = 60) -> Service:
        _running.append(self)
        return super().start(timeout)

    def stop(self, timeout: float = 20) -> None:
        if self in _running:
            _running.remove(self)
        super().stop(timeout)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench itself dies (even by SIGKILL), so nothing is left."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def running() -> list[Service]:
    """The processes started and not stopped yet."""
    return list(_running)


def stop_all() -> None:
    """Stop every process still registered (newest first); safe to call more than once."""
    for service in reversed(list(_running)):
        try:
            service.stop(timeout=10)
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            log(f"could not stop {service.name}: {exc}")


def start_school_api(*, latency_ms: float = 0) -> str:
    """The development school API (no failures), optionally slow; returns its base URL."""
    port = free_port()
    Service(
        f"dev-school-api-{port}",
        [str(BIN / "python"), str(ROOT / "dev" / "school_api.py"), "--host", "127.0.0.1", "--port", str(port),
         "--latency-ms", str(latency_ms)],
        base_env(),
        ready_url=f"http://127.0.0.1:{port}/healthz",
    ).start()
    return f"http://127.0.0.1:{port}"


def start_sync_worker(upstream: str, *, processes: int, threads: int, **env: str) -> Service:
    """The real ``sync-worker`` (Dramatiq), with ``env`` added to its environment; ready once its metrics answer
    (after its workers booted), at ``.metrics_url``."""
    port = free_port()
    service = Service(
        f"sync-worker-{port}",
        [str(BIN / "sync-worker"), "--processes", str(processes), "--threads", str(threads)],
        base_env(UPSTREAM_BASE_URL=upstream, METRICS_PORT=str(port), **env),
        ready_url=f"http://127.0.0.1:{port}/metrics",
    )
    service.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return service.start(timeout=90)


def start_sync_api(**env: str) -> str:
    """The real ``sync-api`` (gunicorn, its own default workers and threads), with ``env`` added to its
    environment; returns its base URL. Its /metrics is on METRICS_PORT (a free port unless ``env`` names one)."""
    port, metrics_port = free_ports(2)
    Service(
        f"sync-api-{port}", [str(BIN / "sync-api")],
        base_env(PORT=str(port), **{"METRICS_PORT": str(metrics_port), **env}),
        ready_url=f"http://127.0.0.1:{port}/healthz",
    ).start()
    return f"http://127.0.0.1:{port}"


def start_mailer(smtp_port: int, *, processes: int, threads: int) -> Service:
    """The real ``mailer`` (Dramatiq, queue ``emails``) sending to ``127.0.0.1:smtp_port`` without TLS;
    ready once its metrics answer (after its workers booted)."""
    port = free_port()
    return Service(
        f"mailer-{port}",
        [str(BIN / "mailer"), "--processes", str(processes), "--threads", str(threads)],
        base_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_port), SMTP_SECURITY="none", MAIL_BACKEND="smtp",
                 METRICS_PORT=str(port)),
        ready_url=f"http://127.0.0.1:{port}/metrics",
    ).start(timeout=90)


def start_smtp_sink() -> tuple[int, str]:
    """``python -m bench.smtp_sink`` in a process of its own; returns its SMTP port and its stats URL."""
    port, http_port = free_ports(2)
    Service(
        f"smtp-sink-{port}",
        [sys.executable, "-m", "bench.smtp_sink", "--port", str(port), "--http-port", str(http_port)],
        base_env(),
        ready_url=f"http://127.0.0.1:{http_port}/stats",
    ).start()
    return port, f"http://127.0.0.1:{http_port}/stats"


def sink_stats(stats_url: str) -> dict:
    """What the sink has counted: count, first, last, distinct_message_ids, duplicates, connections."""
    return requests.get(stats_url, timeout=5).json()


# --------------------------------------------------------------------------- runs


def post_sync_run(web: str) -> tuple[int, float]:
    """POST /api/sync-runs; return the new run's id and the request's latency in seconds."""
    started = time.perf_counter()
    response = requests.post(f"{web}/api/sync-runs", headers=AUTH, timeout=30)
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/sync-runs answered {response.status_code}: {response.text[:300]}")
    return response.json()["id"], elapsed


def run_state(engine: Engine, run_id: int) -> dict:
    """The run as the product reports it (``antrian.sync.runs.get_run``), plus its fan-out flag and its
    duration in seconds by the database's own timestamps (None while running)."""
    from antrian.sync.runs import get_run

    run = get_run(engine, run_id)
    with engine.connect() as connection:
        run["fanout_done"] = connection.execute(
            text("SELECT fanout_done FROM sync_runs WHERE id = :id"), {"id": run_id}
        ).scalar_one()
    finished = run["finished_at"]
    run["seconds"] = (
        None if finished is None
        else (datetime.fromisoformat(finished) - datetime.fromisoformat(run["started_at"])).total_seconds()
    )
    return run


def wait_for_run(engine: Engine, run_id: int, *, timeout: float, field: str = "finished") -> dict:
    """Poll the run every 0.1 s until it is finished (or, with ``field="fanout_done"``, fanned out)."""

    def done():
        run = run_state(engine, run_id)
        return run if (run["status"] == "finished" if field == "finished" else run["fanout_done"]) else None

    return wait_until(done, timeout=timeout, interval=0.1, what=f"sync run {run_id} ({field})")


def synced_window(engine: Engine):
    """How many students have a pembayaran, and the first and last moment one was stored."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                """SELECT count(*) AS synced,
                          extract(epoch FROM max(pembayaran_synced_at) - min(pembayaran_synced_at)) AS seconds
                   FROM students WHERE pembayaran_synced_at IS NOT NULL"""
            )
        ).one()


_FANOUT_LINE = re.compile(r"sync run (\d+) fanned out: (\d+) messages in ([\d.]+)s \((\d+)/s\)")


def fanout_lines(service: Service) -> list[dict]:
    """The fan-out's own log lines ("sync run N fanned out: M messages in Xs (R/s)") from a worker's log."""
    found = []
    for line in service.log().splitlines():
        try:
            message = json.loads(line).get("message", "")
        except (ValueError, AttributeError):
            continue
        match = _FANOUT_LINE.search(message)
        if match:
            run_id, messages, seconds, rate = match.groups()
            found.append({"run_id": int(run_id), "messages": int(messages), "seconds": float(seconds),
                          "rate_per_s": int(rate)})
    return found


def median(values: list[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------- table cells


def latencies(result: dict) -> str:
    """p50 / p90 / p99 / max of a latency result, in ms."""
    return " / ".join(f"{result[key]}" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")) + " ms"


def codes(result: dict) -> str:
    """Answers by HTTP status: "201: 3000, 503: 2"."""
    return ", ".join(f"{code}: {n}" for code, n in result["status_codes"].items())


def per_unit(cpu_seconds: dict[str, float], units: int) -> str:
    """CPU ms per unit (student, booking, email) by process."""
    return ", ".join(f"{who} {seconds * 1000 / units:.1f}" for who, seconds in cpu_seconds.items())


def machine(result: dict) -> str:
    """The machine's CPU busy, its steal, and the load average before: "62.0% (0.0%; 1.93)"."""
    return (f"{result['machine_cpu_busy_percent']}% ({result['machine_cpu_steal_percent']}%;"
            f" {result['loadavg_1m_before']})")


def sessions(db: dict) -> str:
    """The three commonest busy database session states, and how many sessions ended."""
    busy = ", ".join(f"{what} {n}" for what, n in list(db["states"].items())[:3]) or "none"
    return f"{busy}; {db['sessions_ended']} sessions ended meanwhile"
