"""The images `make images` built, run for real (make test-images): each as Kubernetes runs it (read-only root,
a tmpfs for /tmp, no capability, uid 10001) on the host's network against this machine's PostgreSQL and
RabbitMQ (the tests' own database and vhost): the web's /healthz and /readyz, each worker's liveness and
readiness probes exactly as k8s/base calls them, and `docker stop` in the middle of a job: the job finishes
and the container exits within its manifest's terminationGracePeriodSeconds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.images.containers import GRACE, IMAGES, Container, container_env, wait_for_log
from tests.support import API_TOKEN, TEST_DATABASE, free_port, free_ports, http_ok, send_json, serve, wait_until

pytestmark = pytest.mark.images

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
#: Dramatiq's main process logs this when SIGTERM reached it (PID 1: the exec-form entrypoint).
SIGTERM_SEEN = r"Sending signal 'SIGTERM' to subprocesses"
#: How each worker deployable is started, as its manifest (k8s/base/*.yaml) starts it: image, command.
WORKERS = {
    "sync-worker": (IMAGES["sync-api"], ["sync-worker", "--processes", "1", "--threads", "4"]),
    "mailer": (IMAGES["mailer"], ["--processes", "1", "--threads", "4"]),
    "booking-expiry": (IMAGES["booking-expiry"], ["--processes", "1", "--threads", "2"]),
}


@pytest.fixture
def containers(request) -> Iterator[list[Container]]:
    """Every container a test starts; removed afterwards, their output shown when the test failed."""
    started: list[Container] = []
    yield started
    report = getattr(request.node, "rep_call", None)
    for container in started:
        if report is not None and report.failed:
            print(f"\n----- {container.name} -----\n{container.logs()[-5000:]}")
        container.remove()


class Web(str):
    """sync-api's base URL, with its container and its /metrics URL (on METRICS_PORT)."""

    container: Container
    metrics: str


@pytest.fixture
def web(clean, containers) -> Web:
    """sync-api from its image (its CMD), on free loopback ports; returns its base URL once /healthz answers."""
    port, metrics_port = free_ports(2)
    container = Container(IMAGES["sync-api"], env=container_env(PORT=str(port), METRICS_PORT=str(metrics_port)),
                          name="sync-api").start()
    containers.append(container)
    url = Web(f"http://127.0.0.1:{port}")
    wait_until(lambda: container.running() and http_ok(f"{url}/healthz"), timeout=60, what="sync-api's /healthz")
    url.container = container
    url.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    return url


def start_worker(containers: list[Container], deployable: str, **env: str) -> Container:
    image, args = WORKERS[deployable]
    container = Container(image, *args, env=container_env(METRICS_PORT=str(free_port()), **env),
                          name=deployable).start()
    containers.append(container)
    # The manifests' readinessProbe and livenessProbe, run in the container as the kubelet runs them.
    wait_until(lambda: container.probe("antrian-worker-probe", deployable, "--ready"), timeout=90, interval=0.5,
               what=f"{deployable}'s readiness probe")
    assert container.exec("antrian-worker-probe", deployable).returncode == 0, "liveness"
    return container


def stop_mid_job(container: Container, deployable: str, release: Callable[[], None]) -> None:
    """``docker stop`` the worker while it holds a job; once the SIGTERM reached Dramatiq (PID 1), ``release``
    lets the job go on: it must finish, and the container exit 0, within the manifest's grace period."""
    grace = GRACE[deployable]
    outcome: dict = {}

    def stop() -> None:
        outcome["taken"], outcome["exit_code"] = container.stop(grace)

    before = len(container.logs())
    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    wait_for_log(container, SIGTERM_SEEN, timeout=30, after=before)
    release()
    thread.join(grace + 60)
    assert outcome["exit_code"] == 0, container.logs()[-3000:]
    assert outcome["taken"] < grace, outcome


# ---- sync-api ----------------------------------------------------------------------------------------


def test_migrate_then_the_web_serves_healthz_readyz_and_metrics_read_only_as_uid_10001(engine, web, containers):
    # `antrian migrate` from the image (k8s/base/migrate.yaml's command) on an empty database, read-only root
    scratch = f"{TEST_DATABASE}_migrate"
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {scratch}"))
    try:
        migrate = Container(IMAGES["sync-api"], "antrian", "migrate", name="migrate",
                            env=container_env(DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{scratch}"))
        result = migrate.run()
        assert result.returncode == 0, result.stdout + result.stderr
        scratch_engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{scratch}")
        with scratch_engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert connection.execute(text("SELECT count(*) FROM students")).scalar() == 0
        scratch_engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        admin.dispose()

    # The probes of k8s/base/sync-api.yaml: liveness /healthz, readiness /readyz (PostgreSQL and RabbitMQ)
    assert requests.get(f"{web}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{web}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok" and ready.json()["broker"] == "ok"
    assert requests.get(web.metrics, timeout=10).status_code == 200
    assert requests.get(f"{web}/api/jobs/failed", headers=AUTH, timeout=5).status_code == 200

    container: Container = web.container
    status = container.exec("cat", "/proc/1/status").stdout
    assert "\nUid:\t10001\t10001\t10001\t10001" in status and "\nCapEff:\t0000000000000000" in status, status
    assert "gunicorn" in container.exec("cat", "/proc/1/cmdline").stdout, "gunicorn is PID 1 (exec form)"
    assert container.exec("touch", "/home/antrian/x").returncode != 0, "the root filesystem is read-only"

    taken, exit_code = container.stop(GRACE["sync-api"])
    assert exit_code == 0, container.logs()[-3000:]
    assert taken < GRACE["sync-api"], taken


# ---- the workers: probes, and docker stop mid-job ----------------------------------------------------


class School:
    """A school API that holds each student's request until released (the job is mid-flight meanwhile)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        school = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/healthz":
                    send_json(self, 200, {"status": "ok"})
                    return
                school.arrived.set()
                school.release.wait(60)
                send_json(self, 200, {"status": True, "data": [{"bulan": "Juli", "lunas": True}]})

        self.httpd, self.url = serve(Handler)


def test_sync_worker_is_ready_and_finishes_the_student_it_holds_when_docker_stops_it(web, engine, containers):
    school = School()
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO students (idperson, name) VALUES (4242, 'Siti')"))
        worker = start_worker(containers, "sync-worker", UPSTREAM_BASE_URL=school.url)
        run = requests.post(f"{web}/api/sync-runs", headers=AUTH, timeout=10)
        assert run.status_code == 202, run.text
        assert school.arrived.wait(60), "the sync-worker never asked the school API"

        # only once dramatiq got the SIGTERM does the school answer: the job finishes during the shutdown
        stop_mid_job(worker, "sync-worker", school.release.set)

        with engine.connect() as connection:
            stored = connection.execute(text("SELECT pembayaran FROM students WHERE idperson = 4242")).scalar()
        assert stored == [{"bulan": "Juli", "lunas": True}], "the student held at docker stop was stored"
        state = requests.get(f"{web}/api/sync-runs/{run.json()['id']}", headers=AUTH, timeout=10).json()
        assert state["processed"] == 1 and state["failed"] == 0 and state["status"] != "running", state
    finally:
        school.release.set()
        school.httpd.shutdown()
        school.httpd.server_close()


def make_booking(web: str, *, quota: int = 5, quantity: int = 2) -> tuple[int, dict]:
    tour = requests.post(f"{web}/api/tours", headers=AUTH, timeout=10, json={
        "name": "Bromo sunrise", "quota": quota, "price": 350000, "starts_at": "2030-01-05T03:00:00+07:00"})
    assert tour.status_code == 201, tour.text
    booking = requests.post(f"{web}/api/bookings", headers=AUTH, timeout=10, json={
        "tour_id": tour.json()["id"], "quantity": quantity, "customer_name": "Budi",
        "customer_email": "budi@example.com"})
    assert booking.status_code == 201, booking.text
    return tour.json()["id"], booking.json()


def test_mailer_is_ready_and_sends_the_email_it_holds_when_docker_stops_it(web, engine, containers, smtp_server):
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:  # at DATA: the mailer is mid-send until the test lets the server answer
        held.set()
        release.wait(60)

    smtp_server.on_data = hold
    mailer = start_worker(containers, "mailer", **smtp_server.env())
    try:
        _tour, booking = make_booking(web)
        assert held.wait(60), "the mailer never reached DATA"
        stop_mid_job(mailer, "mailer", release.set)
        assert len(smtp_server.messages) == 1, smtp_server.subjects()
        assert booking["code"] in smtp_server.messages[0].as_string()
    finally:
        release.set()


def test_booking_expiry_is_ready_and_finishes_its_sweep_when_docker_stops_it(web, engine, containers):
    worker = start_worker(containers, "booking-expiry")
    tour_id, booking = make_booking(web, quota=5, quantity=2)
    with engine.begin() as connection:
        connection.execute(text("UPDATE bookings SET expires_at = now() - interval '1 minute' WHERE id = :id"),
                           {"id": booking["id"]})
    # The sweep gives the seats back to the tour: a transaction of the test holds the tour's row, so the
    # sweep waits there, mid-job, until the test lets it go.
    holder = engine.connect()
    transaction = holder.begin()
    try:
        holder.execute(text("SELECT quota FROM tours WHERE id = :id FOR UPDATE"), {"id": tour_id})
        # The CronJob's command (k8s/base/booking-expiry-schedule.yaml) from the image enqueues what is due.
        schedule = Container(IMAGES["booking-expiry"], "schedule", "run", entrypoint="antrian", name="schedule",
                             env=container_env()).run()
        assert schedule.returncode == 0, schedule.stdout + schedule.stderr

        def sweep_waits() -> bool:
            with engine.connect() as connection:
                return bool(connection.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"),
                    {"db": TEST_DATABASE}).scalar())

        wait_until(sweep_waits, timeout=60, interval=0.2, what="the sweep to wait for the tour's row")
        stop_mid_job(worker, "booking-expiry", transaction.rollback)
    finally:
        if transaction.is_active:
            transaction.rollback()
        holder.close()
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM bookings WHERE id = :id"), {"id": booking["id"]}).scalar()
        quota = connection.execute(text("SELECT quota FROM tours WHERE id = :id"), {"id": tour_id}).scalar()
    assert (status, quota) == ("expired", 5), "the sweep cut by docker stop finished: expired, seats back"


def test_a_worker_whose_broker_is_unreachable_stops_at_start_with_one_line(clean):
    # SPEC: an unreachable broker stops a process at start with one clear line that names it, no traceback.
    port = free_port()
    image, args = WORKERS["mailer"]
    result = Container(image, *args, name="no-broker",
                       env=container_env(BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}/")).run(timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert output.strip(), "it says why it stopped"
