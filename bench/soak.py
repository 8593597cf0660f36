"""``make soak``: ``make run``'s whole stack under mixed load for SOAK_MINUTES (30), then every invariant checked.

dev/run.py runs as a child of this process, in a database (``antrian_soak``) and vhost (``antrian_soak``) of its
own, on ports of its own, with ``SOAK_STUDENTS`` demo students, BOOKING_EXPIRY_MINUTES=1 and
EXPIRY_SWEEP_SECONDS=30. Meanwhile, all through real HTTP:

- sync runs back to back (``POST /api/sync-runs``, wait until finished, start the next); the development
  school API fails 2% of the students for good (``make run``'s ``--permanent-rate``) and 10% once or twice;
- bookings paced at ``SOAK_BOOKING_RATE``/s (50) from ``SOAK_BOOKING_THREADS`` client threads, on tours
  of ``SOAK_TOUR_QUOTA`` seats, a new tour made whenever one is sold out;
- ``POST /api/payments/simulate`` for ``SOAK_PAY_SHARE`` (0.3) of them, 2-40 s after the booking, and for
  ``SOAK_LATE_PAY_SHARE`` (0.03) after their payment deadline (paid after expiry, or a refund due);
- unpaid bookings expiring and giving their seats back;
- ``POST /api/jobs/failed/retry-all`` every ``SOAK_RETRY_EVERY_S`` (180);
- one of sync-worker, mailer, booking-expiry restarted every ``SOAK_RESTART_EVERY_S`` (300), in turn, by
  SIGKILL to its process group or SIGTERM to its main process; dev/run.py starts it again
  (``DEV_RESTART_ON_EXIT``).

Every ``SOAK_SAMPLE_EVERY_S`` (10) it samples each process's RSS, open files and TCP connections (psutil),
the queues (RabbitMQ's management API), the outbox and the database's connections into ``samples.csv``.
At the end it stops the load, waits until everything is drained, checks the invariants (bench/soak_checks.py),
draws ``soak.png`` (bench/soak_plot.py) and prints a summary; all of it under
``bench/results/soak-<time>/``. Exit status 1 when an invariant is violated, 2 when the stack failed.

Knobs (environment, for short development runs): SOAK_MINUTES, SOAK_WARMUP_S (300, or a third of a shorter
run), SOAK_STUDENTS (2000), SOAK_BOOKING_RATE, SOAK_BOOKING_THREADS (8), SOAK_TOUR_QUOTA (3000),
SOAK_PAY_SHARE, SOAK_PAY_THREADS (6), SOAK_LATE_PAY_SHARE, SOAK_RETRY_EVERY_S, SOAK_RESTART_EVERY_S,
SOAK_SAMPLE_EVERY_S, SOAK_DRAIN_TIMEOUT_S (120: the end waits while the backlog shrinks, up to an hour, and
gives up once nothing has moved for this long), SOAK_LOG_LEVEL (warning), SOAK_KEEP_MAIL (keep the mail
sink's files even when every check passed).
"""

from __future__ import annotations

import csv
import ctypes
import heapq
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import requests
from sqlalchemy import create_engine, text

from tests.support import free_ports_in_a_row

from . import soak_checks, soak_plot
from .common import recreate_database

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS_DIR = ROOT / "bench" / "results"
#: Big or throwaway files (the mail sink's .eml files, the workers' temp dir) stay out of the results.
WORK_DIR = ROOT / "var" / "soak"

DATABASE = "antrian_soak"
DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
VHOST = "antrian_soak"
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
API_TOKEN = "soak-token-0123456789-0123456789-abcd"
PAYMENT_SERVER_KEY = "soak-server-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
#: The workers restarted in turn, and how: SIGKILL to the whole process group (an OOM kill, a lost node) or
#: SIGTERM to the main process (a deploy). Six restarts give each worker each signal once.
RESTARTS = [("sync-worker", "SIGKILL"), ("mailer", "SIGTERM"), ("booking-expiry", "SIGKILL"),
            ("sync-worker", "SIGTERM"), ("mailer", "SIGKILL"), ("booking-expiry", "SIGTERM")]
#: What a developer's shell may hold that would change what dev/run.py starts or where it points.
SHELL_SETTINGS = ("UPSTREAM_BASE_URL", "PAYMENT_API_BASE_URL", "SMTP_HOST", "SMTP_PORT", "MAIL_BACKEND",
                  "PAYMENT_SIMULATOR", "PROMETHEUS_MULTIPROC_DIR", "METRICS_PORT", "PORT", "DB_POOL_SIZE",
                  "RABBITMQ_MANAGEMENT_URL", "PAYMENT_RECONCILE_SECONDS", "QUEUE_TYPE")
HTTP_TIMEOUT_S = 15


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class Config:
    minutes: float = field(default_factory=lambda: _number("SOAK_MINUTES", 30))
    warmup_s: float | None = field(default_factory=lambda: _number("SOAK_WARMUP_S", 0) or None)
    students: int = field(default_factory=lambda: int(_number("SOAK_STUDENTS", 2000)))
    booking_rate: float = field(default_factory=lambda: _number("SOAK_BOOKING_RATE", 50))
    booking_threads: int = field(default_factory=lambda: int(_number("SOAK_BOOKING_THREADS", 8)))
    tour_quota: int = field(default_factory=lambda: int(_number("SOAK_TOUR_QUOTA", 3000)))
    active_tours: int = 4
    pay_share: float = field(default_factory=lambda: _number("SOAK_PAY_SHARE", 0.3))
    #: A payment takes the gateway's 50 ms and sync-api's own time: 2 threads fell behind at 50 bookings/s.
    pay_threads: int = field(default_factory=lambda: int(_number("SOAK_PAY_THREADS", 6)))
    late_pay_share: float = field(default_factory=lambda: _number("SOAK_LATE_PAY_SHARE", 0.03))
    retry_every_s: float = field(default_factory=lambda: _number("SOAK_RETRY_EVERY_S", 180))
    restart_every_s: float = field(default_factory=lambda: _number("SOAK_RESTART_EVERY_S", 300))
    sample_every_s: float = field(default_factory=lambda: _number("SOAK_SAMPLE_EVERY_S", 10))
    #: The end waits while the queues still shrink, and gives up once nothing has moved for this long.
    drain_timeout_s: float = field(default_factory=lambda: _number("SOAK_DRAIN_TIMEOUT_S", 120))
    log_level: str = field(default_factory=lambda: os.environ.get("SOAK_LOG_LEVEL", "").strip() or "warning")
    keep_mail: bool = field(default_factory=lambda: os.environ.get("SOAK_KEEP_MAIL", "").strip().lower()
                            in {"1", "true", "yes"})
    expiry_minutes: int = 1
    sweep_seconds: int = 30

    @property
    def duration_s(self) -> float:
        return self.minutes * 60

    @property
    def warmup(self) -> float:
        """The first seconds left out of the growth figures: 5 minutes, or a third of a shorter run."""
        return self.warmup_s if self.warmup_s is not None else min(300.0, self.duration_s / 3)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- events and samples


class Recorder:
    """The soak's clock, its events (events.csv) and its samples (samples.csv, long format)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self._samples = (folder / "samples.csv").open("w", newline="")
        self._writer = csv.writer(self._samples)
        self._writer.writerow(["elapsed_s", "metric", "subject", "pid", "value"])
        self._events = (folder / "events.csv").open("w", newline="")
        self._event_writer = csv.writer(self._events)
        self._event_writer.writerow(["elapsed_s", "at", "event", "detail"])

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def event(self, kind: str, detail: str = "") -> None:
        with self.lock:
            row = {"elapsed_s": round(self.elapsed(), 1), "at": datetime.now(UTC).isoformat(timespec="seconds"),
                   "event": kind, "detail": detail}
            self.events.append(row)
            self._event_writer.writerow(row.values())
            self._events.flush()
        log(f"{kind}: {detail}" if detail else kind)

    def samples(self, rows: list[tuple[str, str, int | str, float]]) -> None:
        elapsed = round(self.elapsed(), 1)
        with self.lock:
            self._writer.writerows((elapsed, *row) for row in rows)
            self._samples.flush()

    def close(self) -> None:
        self._samples.close()
        self._events.close()


# --------------------------------------------------------------------------- the stack


def reset_vhost() -> None:
    for args in (("delete_vhost", VHOST), ("add_vhost", VHOST), ("set_permissions", "-p", VHOST, "guest", ".*",
                                                                 ".*", ".*")):
        result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0 and args[0] != "delete_vhost":
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")


def stack_env(config: Config, ports: dict[str, int]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SHELL_SETTINGS}
    tmp = WORK_DIR / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        DATABASE_URL=DATABASE_URL, BROKER_URL=BROKER_URL, API_TOKEN=API_TOKEN, PAYMENT_SERVER_KEY=PAYMENT_SERVER_KEY,
        HOST="127.0.0.1", PYTHONUNBUFFERED="1", DEMO_DATA="false", LOG_LEVEL=config.log_level,
        BOOKING_EXPIRY_MINUTES=str(config.expiry_minutes), EXPIRY_SWEEP_SECONDS=str(config.sweep_seconds),
        DEV_RESTART_ON_EXIT=",".join(sorted({name for name, _ in RESTARTS})),
        # The workers' heartbeat folders and every metrics folder: apart from a `make run` on this machine.
        TMPDIR=str(tmp), PROMETHEUS_MULTIPROC_BASE=str(tmp),
        MAIL_SINK_DIR=str(WORK_DIR / "mail-sink"),
        PORT=str(ports["api"]), METRICS_PORT=str(ports["metrics"]), DEV_SCHOOL_API_PORT=str(ports["school"]),
        DEV_PAYMENT_GATEWAY_PORT=str(ports["gateway"]), MAIL_SINK_SMTP_PORT=str(ports["smtp"]),
        MAIL_SINK_PORT=str(ports["sink_web"]),
    )
    return env


_STARTED = re.compile(r"^run\s*\| started (.*)$")
_ONE = re.compile(r"([\w-]+)(?: again)? \(pid (\d+)\)")


class Stack:
    """``dev/run.py`` as a child: its output to run.log, and which pid each of its children has now."""

    def __init__(self, env: dict[str, str], folder: Path, recorder: Recorder) -> None:
        self.env = env
        self.recorder = recorder
        self.pids: dict[str, int] = {}
        self.ready = threading.Event()
        self.started_again = threading.Condition()
        self.log_file = (folder / "run.log").open("w")
        self.process = subprocess.Popen(
            [str(BIN / "python"), str(ROOT / "dev" / "run.py")], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.reader = threading.Thread(target=self._read, name="run.log", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log_file.write(line)
            match = _STARTED.match(line.rstrip("\n"))
            if match:
                with self.started_again:
                    for name, pid in _ONE.findall(match.group(1)):
                        self.pids[name] = int(pid)
                    self.started_again.notify_all()
            if "Ctrl-C stops everything." in line:
                self.ready.set()
        self.log_file.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.5):
            if not self.alive():
                raise RuntimeError(f"dev/run.py exited with code {self.process.returncode} (see run.log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dev/run.py not ready after {timeout:.0f}s (see run.log)")

    def wait_restarted(self, name: str, old_pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self.started_again:
            while self.pids.get(name) == old_pid:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    return None
                self.started_again.wait(min(left, 1.0))
            return self.pids.get(name)

    def stop(self) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(timeout=10)
        self.log_file.close()
        return self.process.returncode


def _die_with_parent() -> None:
    """In dev/run.py before exec: SIGTERM when the soak dies (even by SIGKILL), so that it stops every service."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_step(argv: list[str], env: dict[str, str], folder: Path) -> None:
    with (folder / "setup.log").open("a") as output:
        result = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, cwd=ROOT, stdout=output,
                                stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with code {result.returncode} (see setup.log)")


# --------------------------------------------------------------------------- load


class Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[key] += amount


@dataclass
class Ledger:
    """What the clients were told: the bookings answered 201, the tours made, the payments answered."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    bookings: dict[int, dict] = field(default_factory=dict)
    tours: dict[int, int] = field(default_factory=dict)  # id -> quota it was made with
    payments: dict[str, dict] = field(default_factory=dict)  # code -> last answer
    runs: list[dict] = field(default_factory=list)
    retries: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)


class Tours:
    """The tours bookings go to: ``active`` of them at a time, each replaced by a new one once sold out."""

    def __init__(self, api: str, ledger: Ledger, recorder: Recorder, config: Config) -> None:
        self.api, self.ledger, self.recorder, self.config = api, ledger, recorder, config
        self.lock = threading.Lock()
        self.active: list[int] = []
        self.retired: set[int] = set()
        self.counter = itertools.count()
        self.session = requests.Session()
        for _ in range(config.active_tours):
            self.active.append(self._create())

    def _create(self) -> int:
        number = len(self.ledger.tours) + 1
        body = {"name": f"Soak tour {number}", "quota": self.config.tour_quota, "price": "150000.00",
                "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()}
        response = self.session.post(f"{self.api}/api/tours", json=body, headers=AUTH, timeout=HTTP_TIMEOUT_S)
        if response.status_code != 201:
            raise RuntimeError(f"POST /api/tours answered {response.status_code}: {response.text[:200]}")
        tour = response.json()
        with self.ledger.lock:
            self.ledger.tours[tour["id"]] = self.config.tour_quota
        self.recorder.event("tour-created", f"tour {tour['id']} with {self.config.tour_quota} seats")
        return tour["id"]

    def pick(self) -> int:
        with self.lock:
            return self.active[next(self.counter) % len(self.active)]

    def sold_out(self, tour_id: int) -> None:
        with self.lock:
            if tour_id in self.retired or tour_id not in self.active:
                return
            self.retired.add(tour_id)
            self.active[self.active.index(tour_id)] = self._create()


class Payments:
    """Bookings to pay, each at its time, by ``POST /api/payments/simulate`` from ``pay_threads`` threads."""

    def __init__(self, api: str, ledger: Ledger, totals: Totals, stop: threading.Event) -> None:
        self.api, self.ledger, self.totals, self.stop = api, ledger, totals, stop
        self.lock = threading.Condition()
        self.due: list[tuple[float, str]] = []

    def schedule(self, code: str, delay_s: float) -> None:
        with self.lock:
            heapq.heappush(self.due, (time.monotonic() + delay_s, code))
            self.lock.notify()

    def work(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            with self.lock:
                if not self.due or self.due[0][0] > time.monotonic():
                    self.lock.wait(0.2)
                    continue
                _, code = heapq.heappop(self.due)
            try:
                response = session.post(f"{self.api}/api/payments/simulate", json={"code": code}, headers=AUTH,
                                        timeout=HTTP_TIMEOUT_S)
            except requests.RequestException as exc:
                self.totals.add(f"payment error {type(exc).__name__}")
                continue
            if response.status_code == 200:
                answer = response.json()
                self.totals.add(f"payment {answer.get('outcome')}")
                with self.ledger.lock:
                    self.ledger.payments[code] = answer
            else:
                self.totals.add(f"payment HTTP {response.status_code}")

    def left(self) -> int:
        with self.lock:
            return len(self.due)


class Bookings:
    """``threads`` client threads, each paced at ``rate / threads`` bookings a second."""

    def __init__(self, api: str, config: Config, tours: Tours, payments: Payments, ledger: Ledger, totals: Totals,
                 stop: threading.Event) -> None:
        self.api, self.config, self.tours, self.payments = api, config, tours, payments
        self.ledger, self.totals, self.stop = ledger, totals, stop
        self.numbers = itertools.count(1)
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def work(self, index: int) -> None:
        session = requests.Session()
        rng = random.Random(index)
        interval = self.config.booking_threads / self.config.booking_rate
        next_at = time.monotonic() + interval * index / self.config.booking_threads
        while not self.stop.is_set():
            now = time.monotonic()
            if next_at > now:
                self.stop.wait(next_at - now)
                continue
            if now - next_at > 1.0:  # more than a second behind: the ticks missed are counted, not caught up
                self.totals.add("booking ticks missed", int((now - next_at) / interval))
                next_at = now
            next_at += interval
            self._book(session, rng)

    def _book(self, session: requests.Session, rng: random.Random) -> None:
        number = next(self.numbers)
        for _ in range(3):  # a sold-out tour is replaced, then the same booking goes to another
            tour_id = self.tours.pick()
            body = {"tour_id": tour_id, "quantity": rng.randint(1, 3), "customer_name": f"Soak Customer {number}",
                    "customer_email": f"soak{number}@example.com"}
            try:
                response = session.post(f"{self.api}/api/bookings", json=body, headers=AUTH, timeout=HTTP_TIMEOUT_S)
            except requests.RequestException as exc:
                self.totals.add(f"booking error {type(exc).__name__}")
                return
            if response.status_code == 409:
                self.totals.add("booking 409 (sold out)")
                self.tours.sold_out(tour_id)
                continue
            if response.status_code != 201:
                self.totals.add(f"booking HTTP {response.status_code}")
                return
            booking = response.json()
            self.totals.add("booked")
            with self.ledger.lock:
                self.ledger.bookings[booking["id"]] = {"code": booking["code"], "tour_id": tour_id,
                                                       "quantity": body["quantity"]}
            draw = rng.random()
            if draw < self.config.pay_share:
                self.payments.schedule(booking["code"], rng.uniform(2, 40))
            elif draw < self.config.pay_share + self.config.late_pay_share:
                late = self.config.expiry_minutes * 60 + rng.uniform(10, 50)
                self.payments.schedule(booking["code"], late)
            return


def sync_runs(api: str, ledger: Ledger, recorder: Recorder, stop: threading.Event, totals: Totals) -> None:
    """Back-to-back sync runs until ``stop``; the run going when it is set is waited for."""
    session = requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = session.post(f"{api}/api/sync-runs", headers=AUTH, timeout=HTTP_TIMEOUT_S)
        except requests.RequestException as exc:
            totals.add(f"sync-run POST error {type(exc).__name__}")
            stop.wait(2)
            continue
        if response.status_code == 409:
            run_id = response.json().get("id")
            totals.add("sync-run POST 409")
        elif response.status_code == 202:
            run_id = response.json()["id"]
        else:
            totals.add(f"sync-run POST HTTP {response.status_code}")
            stop.wait(2)
            continue
        run = wait_for_run(session, api, run_id, recorder)
        run["seconds"] = round(time.monotonic() - started, 1)
        with ledger.lock:
            ledger.runs.append(run)
        recorder.event("sync-run", f"run {run_id} {run.get('status')}: {run.get('processed')}/{run.get('total')} "
                                   f"processed, {run.get('failed')} failed, {run['seconds']}s")


def wait_for_run(session: requests.Session, api: str, run_id: int, recorder: Recorder,
                 timeout: float = 1800) -> dict:
    deadline = time.monotonic() + timeout
    run: dict = {"id": run_id}
    while time.monotonic() < deadline:
        try:
            response = session.get(f"{api}/api/sync-runs/{run_id}", headers=AUTH, timeout=HTTP_TIMEOUT_S)
            if response.status_code == 200:
                run = response.json()
                if run.get("status") != "running":
                    return run
        except requests.RequestException:
            pass
        time.sleep(1)
    run["status"] = f"still {run.get('status')} after {timeout:.0f}s"
    return run


def retry_failed_jobs(api: str, ledger: Ledger, recorder: Recorder, stop: threading.Event, every_s: float) -> None:
    session = requests.Session()
    while not stop.wait(every_s):
        try:
            response = session.post(f"{api}/api/jobs/failed/retry-all", headers=AUTH, timeout=60)
            answer = response.json() if response.status_code == 202 else {"error": response.status_code}
        except requests.RequestException as exc:
            answer = {"error": type(exc).__name__}
        with ledger.lock:
            ledger.retries.append({"elapsed_s": round(recorder.elapsed(), 1), **answer})
        recorder.event("retry-all", json.dumps(answer))


def restart_workers(stack: Stack, ledger: Ledger, recorder: Recorder, stop: threading.Event, every_s: float) -> None:
    for index, (name, signame) in enumerate(itertools.cycle(RESTARTS)):
        if stop.wait(every_s / 2 if index == 0 else every_s):  # at 2.5, 7.5, ... min: six fit in 30 min
            return
        pid = stack.pids.get(name)
        if pid is None:
            recorder.event("restart-skipped", f"{name}: no pid known")
            continue
        killed_at = time.monotonic()
        try:
            if signame == "SIGKILL":
                os.killpg(pid, signal.SIGKILL)  # the whole group: each child of dev/run.py leads its own
            else:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            recorder.event("restart-skipped", f"{name}: pid {pid} is gone")
            continue
        recorder.event("kill", f"{signame} {name} (pid {pid})")
        new_pid = stack.wait_restarted(name, pid, timeout=150)
        restart = {"elapsed_s": round(killed_at - recorder.t0, 1), "service": name, "signal": signame,
                   "old_pid": pid, "new_pid": new_pid,
                   "restarted_after_s": round(time.monotonic() - killed_at, 1) if new_pid else None}
        with ledger.lock:
            ledger.restarts.append(restart)
        recorder.event("restarted" if new_pid else "not-restarted",
                       f"{name} as pid {new_pid} after {restart['restarted_after_s']}s" if new_pid else name)


# --------------------------------------------------------------------------- sampling


def process_samples(stack: Stack) -> list[tuple[str, str, int | str, float]]:
    """RSS (MB), open files, TCP connections and CPU seconds of every process of every child of dev/run.py.

    A child's main process is its name; its descendants (gunicorn's and Dramatiq's worker processes) are
    ``name.1``, ``name.2``, ... by start time.
    """
    rows: list[tuple[str, str, int | str, float]] = []
    for name, pid in sorted(stack.pids.items()):
        try:
            main = psutil.Process(pid)
            family = [main, *sorted(main.children(recursive=True), key=lambda p: (p.create_time(), p.pid))]
        except psutil.Error:
            continue
        for index, process in enumerate(family):
            label = name if index == 0 else f"{name}.{index}"
            try:
                with process.oneshot():
                    rss = process.memory_info().rss / 2**20
                    fds = process.num_fds()
                    times = process.cpu_times()
                tcp = len(process.net_connections(kind="tcp"))
            except psutil.Error:
                continue
            rows += [("rss_mb", label, process.pid, round(rss, 2)), ("fds", label, process.pid, fds),
                     ("tcp", label, process.pid, tcp),
                     ("cpu_s", label, process.pid, round(times.user + times.system, 2))]
    return rows


def state_samples(engine, settings) -> list[tuple[str, str, int | str, float]]:
    """Each queue's ready, unacknowledged, delayed and dead-lettered messages; the outbox, failed jobs and the
    database's connections."""
    from antrian.jobs import queue_stats

    rows: list[tuple[str, str, int | str, float]] = []
    try:
        for stats in queue_stats.collect(settings, engine):
            for metric in ("ready", "unacknowledged", "delayed", "dead_lettered", "consumers"):
                value = getattr(stats, metric)
                if value is not None:
                    rows.append((f"queue_{metric}", stats.name, "", value))
    except Exception as exc:  # noqa: BLE001 - a sample missed is noted, not fatal
        log(f"queue sample failed: {exc}")
    with engine.connect() as connection:
        outbox, failed, backends, bookings, pending = connection.execute(text(
            """SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM failed_jobs),
                      (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),
                      (SELECT count(*) FROM bookings), (SELECT count(*) FROM bookings WHERE status = 'pending')"""
        )).one()
    rows += [("outbox_rows", "outbox", "", outbox), ("failed_jobs", "failed_jobs", "", failed),
             ("db_connections", "postgresql", "", backends), ("bookings", "all", "", bookings),
             ("bookings", "pending", "", pending)]
    return rows


def sample(stack: Stack, recorder: Recorder, stop: threading.Event, every_s: float) -> None:
    from antrian.config import load_settings

    settings = load_settings(stack.env)
    engine = create_engine(DATABASE_URL, pool_size=1, max_overflow=0)
    try:
        while True:
            started = time.monotonic()
            try:
                recorder.samples(process_samples(stack) + state_samples(engine, settings))
            except Exception as exc:  # noqa: BLE001
                log(f"sample failed: {exc}")
            if stop.wait(max(0.0, every_s - (time.monotonic() - started))):
                return
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the run


def main() -> int:
    config = Config()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = RESULTS_DIR / f"soak-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    recorder = Recorder(folder)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log(f"{config.minutes:g} min soak, results in {folder.relative_to(ROOT)}/ ({config})")
    first = free_ports_in_a_row(8)
    ports = {"api": first, "school": first + 1, "gateway": first + 2, "smtp": first + 3, "sink_web": first + 4,
             "metrics": first + 5}  # the workers take metrics, +1 and +2
    env = stack_env(config, ports)
    api = f"http://127.0.0.1:{ports['api']}"
    ledger, totals = Ledger(), Totals()
    stack: Stack | None = None
    load_stop, sample_stop = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    result: dict = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "config": config.__dict__,
                    "warmup_s": config.warmup, "folder": str(folder)}
    code = 0
    try:
        log(f"database {DATABASE} and vhost {VHOST} made anew; {config.students} students seeded")
        recreate_database(DATABASE)
        reset_vhost()
        run_step(["antrian", "migrate"], env, folder)
        run_step(["antrian", "seed-demo", "--students", str(config.students), "--tours", "0"], env, folder)
        stack = Stack(env, folder, recorder)
        stack.wait_ready(timeout=180)
        recorder.event("ready", " ".join(f"{name}={pid}" for name, pid in sorted(stack.pids.items())))
        sampler = threading.Thread(target=sample, args=(stack, recorder, sample_stop, config.sample_every_s),
                                   name="sampler", daemon=True)
        sampler.start()
        tours = Tours(api, ledger, recorder, config)
        payments = Payments(api, ledger, totals, load_stop)
        bookings = Bookings(api, config, tours, payments, ledger, totals, load_stop)
        runner = threading.Thread(target=sync_runs, args=(api, ledger, recorder, load_stop, totals), name="sync-runs",
                                  daemon=True)
        threads = [runner,
                   *(threading.Thread(target=bookings.work, args=(i,), name=f"book-{i}", daemon=True)
                     for i in range(config.booking_threads)),
                   *(threading.Thread(target=payments.work, name=f"pay-{i}", daemon=True)
                     for i in range(config.pay_threads)),
                   threading.Thread(target=retry_failed_jobs, args=(api, ledger, recorder, load_stop,
                                                                    config.retry_every_s), daemon=True),
                   threading.Thread(target=restart_workers, args=(stack, ledger, recorder, load_stop,
                                                                  config.restart_every_s), daemon=True)]
        load_started = time.monotonic()
        for thread in threads:
            thread.start()
        deadline = load_started + config.duration_s
        next_report = load_started + 60
        while time.monotonic() < deadline:
            if not stack.alive():
                raise RuntimeError(f"dev/run.py exited with code {stack.process.returncode} mid-soak (see run.log)")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += 60
                log(f"{(time.monotonic() - load_started) / 60:.0f} min: {dict(sorted(totals.counts.items()))}, "
                    f"{len(ledger.runs)} runs")
        load_seconds = time.monotonic() - load_started
        result["load_window_s"] = [round(load_started - recorder.t0, 1), round(recorder.elapsed(), 1)]
        recorder.event("load-stopped", f"after {load_seconds:.0f}s; {payments.left()} payments not made")
        load_stop.set()
        for thread in threads[1:]:
            thread.join(timeout=180)
        runner.join(timeout=config.drain_timeout_s)
        if runner.is_alive():
            recorder.event("drain", "the last sync run did not finish in time")
        drain_started = time.monotonic()
        drained = soak_checks.wait_drained(DATABASE_URL, BROKER_URL, VHOST, stall_s=config.drain_timeout_s)
        result["drain_seconds"] = round(time.monotonic() - drain_started, 1)
        recorder.event("drained" if drained is True else "not-drained",
                       f"in {result['drain_seconds']}s" if drained is True else str(drained))
        sample_stop.set()
        sampler.join(timeout=60)
        result["load_seconds"] = round(load_seconds, 1)
        result["totals"] = dict(sorted(totals.counts.items()))
        result["bookings_per_s"] = round(totals.counts["booked"] / load_seconds, 2)
        result["runs"] = ledger.runs
        result["retries"] = ledger.retries
        result["restarts"] = ledger.restarts
        log("checking the invariants")
        mailer_kills = [restart["elapsed_s"] for restart in ledger.restarts
                        if restart["service"] == "mailer" and restart["signal"] == "SIGKILL"]
        result["checks"] = soak_checks.check_all(
            DATABASE_URL, BROKER_URL, VHOST, WORK_DIR / "mail-sink", ledger=ledger, students=config.students,
            mailer_kills=[recorder.t0 + seconds for seconds in mailer_kills], drained=drained,
            runner_finished=not runner.is_alive(),
        )
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        code = 2
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"soak failed: {result['error']}")
    finally:
        load_stop.set()
        sample_stop.set()
        if stack is not None:
            result["stack_exit_code"] = stack.stop()
        recorder.close()
    window = result.get("load_window_s") or [0.0, recorder.elapsed()]
    result["growth"] = soak_plot.growth(folder / "samples.csv", start_s=window[0] + config.warmup, end_s=window[1],
                                        warmup_s=config.warmup)
    try:
        soak_plot.plot(folder / "samples.csv", folder / "events.csv", folder / "soak.png",
                       measured_from_s=window[0] + config.warmup, load_window_s=window)
    except Exception as exc:  # noqa: BLE001 - the figures still count without the picture
        log(f"plot failed: {exc}")
    violations = result.get("checks", {}).get("violations", [])
    if code == 0 and violations:
        code = 1
    if code != 1 and not config.keep_mail:
        shutil.rmtree(WORK_DIR / "mail-sink", ignore_errors=True)
    result["exit_code"] = code
    (folder / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    summary = soak_plot.summary_text(result)
    (folder / "summary.txt").write_text(summary)
    print(summary, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
