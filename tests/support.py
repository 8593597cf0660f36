"""Test helpers: real processes on loopback, the test database and the test RabbitMQ vhost."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import pika
import requests
from prometheus_client.parser import text_string_to_metric_families

from dev.payment_gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Each test session gets its own database and vhost, so two sessions on one machine never collide.
TEST_DATABASE = f"antrian_test_{os.getpid()}"
DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEST_DATABASE}"
TEST_VHOST = TEST_DATABASE
BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}"
API_TOKEN = "test-token-0123456789-0123456789-abc"
SYNC_QUEUES = ("sync-pembayaran", "sync-pembayaran.DQ", "sync-pembayaran.XQ")
EMAIL_QUEUES = ("emails", "emails.DQ", "emails.XQ")
EXPIRY_QUEUES = ("booking-expiry", "booking-expiry.DQ", "booking-expiry.XQ")
PAYMENT_SERVER_KEY = "SB-Mid-server-test-key"


def free_port() -> int:
    """A TCP port nobody listens on now, on loopback (see :func:`free_ports`)."""
    return free_ports(1)[0]


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' source ports come from there)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: Where test servers' ports are drawn from: below the ephemeral range, so that no outgoing connection of another
#: test takes a port between its pick and the server's bind (a port from bind(0) is an ephemeral one, and a clean-clone
#: run saw sync-api fail to start with "Address already in use" on one).
_TEST_PORTS = range(20_000, max(_ephemeral_low(), 20_001))


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, drawn at random below the ephemeral range: each is held while the next is
    picked (two picks in a row could otherwise return the same port)."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", _TEST_PORTS[secrets.randbelow(len(_TEST_PORTS))]))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports, below the ephemeral range (for a process that takes
    a base port and the ones after it, as ``make run`` does with METRICS_PORT)."""
    for _ in range(500):
        first = _TEST_PORTS.start + secrets.randbelow(len(_TEST_PORTS) - count)
        if all(_bindable(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} free ports in a row")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def process_env(*, database_url: str, broker_url: str, api_token: str, **overrides: str) -> dict[str, str]:
    """This environment, pointed at one database, vhost and token, without a school API or metrics folder."""
    env = {k: v for k, v in os.environ.items() if k not in {"UPSTREAM_BASE_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    # HOST too: a shell's own HOST (zsh exports one) must not move sync-api off loopback.
    env.update(
        DATABASE_URL=database_url, BROKER_URL=broker_url, API_TOKEN=api_token, HOST="127.0.0.1", PYTHONUNBUFFERED="1",
        # Tests talk plain http on loopback, as make run does; tests/sync_api/web checks the secure default.
        SESSION_COOKIE_SECURE="false",
    )
    env.update(overrides)
    return env


_gateway: Gateway | None = None


def payment_gateway() -> Gateway:
    """The development payment gateway (dev/payment_gateway.py) this test process serves from a thread, on
    loopback: every sync-api the tests start asks it for an order's status, and the tests say what it knows."""
    global _gateway
    if _gateway is None:
        gateway = Gateway(PAYMENT_SERVER_KEY)
        gateway.start()
        _gateway = gateway
    return _gateway


def base_env(**overrides: str) -> dict[str, str]:
    """The environment every antrian process of the tests gets: test database, test vhost, token, gateway."""
    overrides = {"UPSTREAM_TIMEOUT_S": "5", "PAYMENT_SERVER_KEY": PAYMENT_SERVER_KEY,
                 "PAYMENT_API_BASE_URL": payment_gateway().url, **overrides}
    return process_env(database_url=DATABASE_URL, broker_url=BROKER_URL, api_token=API_TOKEN, **overrides)


def wait_until(condition: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def show_output_if_failed(request, outputs: dict[str, Callable[[], str]], *, tail: int = 6000) -> None:
    """After a failed test, print the end of each process's output (``request.node.rep_call`` is set by conftest)."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name, output in outputs.items():
            sys.stderr.write(f"\n----- {name} -----\n{output()[-tail:]}\n")


def send_json(handler, status: int, body, headers: dict[str, str] | None = None) -> None:
    """Answer from a test's own ``BaseHTTPRequestHandler``: JSON (or raw bytes) with a length."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)


def serve(handler_class) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``handler_class`` on a free loopback port in a daemon thread; returns the server and its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}"


class Service:
    """A real process started for a test, its output in a log file, stopped at the end.

    Parameters:
      name(str): shown in failures.
      argv(list[str]): the command.
      env(dict): its environment.
      log_dir(Path): where its output goes.
      ready_url(str | None): a URL that answers 200 once the process is ready.
    """

    #: More ``subprocess.Popen`` options (the benchmarks add a parent-death signal).
    popen_options: dict = {}

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, ready_url: str | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.ready_url = ready_url
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._terminated = False

    def start(self, timeout: float = 30) -> Service:
        self._terminated = False
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            **self.popen_options,
        )
        log.close()
        if self.ready_url:
            wait_until(self._ready, timeout=timeout, what=f"{self.name} at {self.ready_url}\n{self.log()[-3000:]}")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return http_ok(self.ready_url)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the process and every child it started (a crash, not a shutdown)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        """SIGTERM the main process once, without waiting (:meth:`stop` then waits)."""
        if self.process and self.process.poll() is None and not self._terminated:
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the main process only, as Docker and Kubernetes do (Dramatiq forwards it to its
        workers; a second SIGTERM would make them quit mid-message), then reap the whole group."""
        if not self.process:
            return
        try:
            if self.process.poll() is None:
                self.terminate()
                self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(10)


def purge_queues(queues=SYNC_QUEUES + EMAIL_QUEUES + EXPIRY_QUEUES, broker_url: str = BROKER_URL) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        for queue in queues:
            channel = connection.channel()
            try:
                channel.queue_purge(queue)
            except pika.exceptions.ChannelClosedByBroker:
                pass  # not declared yet
    finally:
        connection.close()


def queue_depth(queue: str, broker_url: str = BROKER_URL) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl -q ARGS`` on the machine's broker: its output."""
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=60, capture_output=True,
                          text=True).stdout


#: The entry of :func:`live_queue_counts` for messages held unacknowledged by channels that consume no queue (taken
#: with basic.get, as the dead-letter importer takes them): they belong to no queue RabbitMQ could name.
FETCHED = "(fetched by basic.get)"


def live_queue_counts(ctl: Callable[..., str], broker_url: str, vhost: str) -> dict[str, tuple[int, int]]:
    """Each queue of ``vhost``: (ready, unacknowledged), as they are now.

    Not ``list_queues``' figures: it reports a quorum queue's as of the queue's last tick, up to 5 s old (it once let
    :func:`settled` return while messages were still in flight). Ready comes from a passive declare and
    unacknowledged from the channels that consume the queue (``list_consumers``, ``list_channels``), both live;
    what channels hold without consuming (basic.get) is counted under :data:`FETCHED` when there is any.
    ``ctl(*args)`` runs one rabbitmqctl command on the broker behind ``broker_url``.
    """
    with ThreadPoolExecutor(3) as pool:
        names, consumers, channels = pool.map(lambda args: ctl(*args, "--no-table-headers"), [
            ("list_queues", "-p", vhost, "name"), ("list_consumers", "-p", vhost, "queue_name", "channel_pid"),
            ("list_channels", "pid", "vhost", "messages_unacknowledged")])
    held = {pid: int(count) for pid, where, count in (line.rsplit("\t", 2) for line in channels.splitlines())
            if where == vhost}
    consuming: dict[str, set[str]] = {}
    for line in consumers.splitlines():
        queue, pid = line.rsplit("\t", 1)
        consuming.setdefault(queue, set()).add(pid)
    counts: dict[str, tuple[int, int]] = {}
    if not names.strip():
        return counts
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        for name in names.splitlines():
            try:
                ready = connection.channel().queue_declare(name, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                continue  # deleted meanwhile
            counts[name] = (ready, sum(held.get(pid, 0) for pid in consuming.get(name, ())))
    finally:
        if connection.is_open:
            connection.close()
    consumer_channels = set().union(*consuming.values())
    fetched = sum(count for pid, count in held.items() if pid not in consumer_channels)
    if fetched:
        counts[FETCHED] = (0, fetched)
    return counts


def queue_counts(vhost: str = TEST_VHOST, broker_url: str = BROKER_URL) -> dict[str, tuple[int, int]]:
    """Each queue of the test vhost on the machine's broker: (ready, unacknowledged), live (live_queue_counts)."""
    return live_queue_counts(rabbitmqctl, broker_url, vhost)


def settled(*, timeout: float = 30) -> None:
    """Wait until no message is anywhere in flight: every queue (delayed and dead-letter ones too) holds
    nothing ready and nothing unacknowledged. Then no retry, redelivery or second copy can still come: the
    positive signal that "nothing else happens", instead of a sleep. (The outbox is the only other
    source of messages: wait for it to drain first where a test writes to it.)"""
    wait_until(lambda: all(counts == (0, 0) for counts in queue_counts().values()), timeout=timeout,
               interval=0.3, what="every queue empty, nothing unacknowledged")


def outbox_drained(engine, *, timeout: float = 30) -> None:
    """Wait until the outbox relay has published (and deleted) every row of the outbox."""
    from sqlalchemy import text

    def empty() -> bool:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0

    wait_until(empty, timeout=timeout, what="the outbox relayed")


def take_messages(queue: str, broker_url: str = BROKER_URL) -> list[dict]:
    """Consume and return every message waiting on ``queue`` (decoded Dramatiq messages)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    messages = []
    try:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append(json.loads(body))
    finally:
        connection.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)


def _alone() -> None:
    """Restarting the machine's servers under parallel tests would break the others: such tests are marked."""
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
        raise AssertionError("this test stops RabbitMQ or PostgreSQL: mark it @pytest.mark.restarts")


@contextmanager
def rabbitmq_stopped() -> Iterator[None]:
    """Stop this machine's RabbitMQ for real, and start it again however the block ends."""
    _alone()
    _rabbitmqctl("stop_app")
    try:
        yield
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")


def restart_rabbitmq() -> None:
    with rabbitmq_stopped():
        time.sleep(2)


def _pg_ctlcluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast"],
        check=True, timeout=120, capture_output=True,
    )


def restart_postgresql() -> None:
    _alone()
    _pg_ctlcluster("restart")


@contextmanager
def postgresql_stopped() -> Iterator[None]:
    """Stop this machine's PostgreSQL for real, and start it again however the block ends."""
    _alone()
    _pg_ctlcluster("stop")
    try:
        yield
    finally:
        _pg_ctlcluster("start")
        wait_until(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], timeout=10).returncode == 0,
                   timeout=60, what="PostgreSQL back")


def log_events(*logs: str, event: str | None = None) -> list[dict]:
    """The JSON log lines of processes' output (optionally only those of one ``event``)."""
    events = []
    for log in logs:
        for line in log.splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if event is None or record.get("event") == event:
                    events.append(record)
    return events


def metric(metrics_url: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` (with these labels) that a /metrics page shows; 0 when absent.

    A scrape that races a worker process creating its metrics file is dropped by Dramatiq's exposition server
    (prometheus_client reads the new, still empty file: ``struct.error``, the connection closed without an
    answer); Prometheus takes the next scrape, and so does this, up to three times."""
    for attempt in range(3):
        try:
            page = requests.get(metrics_url, timeout=5).text
            break
        except requests.ConnectionError:
            if attempt == 2:
                raise
            time.sleep(0.2)
    total = 0.0
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


#: How much later than its token a rate-limited call may reach a test's server on a loaded machine (a worker thread,
#: or the test's own server, descheduled for a moment), so that arrivals bunch: a CI run saw 25 in one second at
#: 20/s. Tests counting arrivals allow for it over :data:`ARRIVAL_WINDOW_S`; the tokens themselves are held to the
#: limit exactly in tests/shared/test_rate_limit.py.
ARRIVAL_JITTER_S = 0.25
#: The window arrivals are counted over: long enough that the jitter is a small part of it.
ARRIVAL_WINDOW_S = 2.0


def busiest_second(times: list[float], *, window_s: float = 1.0) -> int:
    """The most events in any sliding window of ``window_s`` seconds of ``times`` (seconds, one clock): a rate
    limit's proof."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def settings_for_tests(**changes):
    """The settings a test process uses itself: the test database and vhost, and the queue arguments the
    environment asks for (``QUEUE_TYPE=classic pytest`` runs the suite on classic queues, the processes it starts
    included), with ``changes``."""
    from dataclasses import replace

    from antrian.config import load_settings

    queues = {name: os.environ[name] for name in ("QUEUE_TYPE", "QUEUE_DELIVERY_LIMIT") if name in os.environ}
    return replace(load_settings(queues), database_url=DATABASE_URL, broker_url=BROKER_URL, **changes)
