"""Two worker hosts, one cut off mid-run: its unacknowledged messages go to the other and the counts stay exact.

Each "host" is a network namespace of its own (tests/faults/netns.py) running the real ``sync-worker``; it reaches
RabbitMQ and PostgreSQL through :class:`Relay` s on its own link and asks its own school API stand-in (served by
this test process on the link's address, so the test knows which host asked what). Mid-run host A's link drops
every packet both ways. The relays live in this machine's namespace, so RabbitMQ still holds a healthy TCP
connection (the relay's): it can only learn that A is gone from the heartbeats that stop coming (``heartbeat=5``
on A's URL), then it closes A's connections and puts A's unacknowledged messages back for B's consumers. The test
checks that this is what happened (RabbitMQ's own per-channel counts and its log), that B asked the school API for
the students A was waiting on when it was cut off, and that the run ends with every student counted exactly once.
Then A comes back (its late answers and reconnection change nothing) and everything it made is removed.
"""

from __future__ import annotations

import glob
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import text

from antrian.cli.demo import seed_students
from antrian.sync.runs import get_run
from dev.school_api import payment_data
from tests.faults.netns import Namespace, Relay, namespace
from tests.support import (
    BIN,
    TEST_DATABASE,
    TEST_VHOST,
    Service,
    base_env,
    free_port,
    http_ok,
    metric,
    send_json,
    settled,
    wait_until,
)
from tests.sync_api.sync.helpers import assert_exact_outcome, idpersons, wait_for_run

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the test makes network namespaces, TUN devices and addresses of its own"
)

STUDENTS = 3000
#: Seconds of AMQP heartbeat on every host's connection: RabbitMQ drops a silent peer within about two of them.
HEARTBEAT_S = 5
#: Host A is cut off once this many students have an outcome (20% of the run).
CUT_AT = STUDENTS // 5
_PATH = re.compile(r"^/siswa/(\d+)/pembayaran$")
_CHANNEL = re.compile(r"^127\.0\.0\.1:(\d+) -> ")


@dataclass
class Asked:
    """One request a school API stand-in received: who, when, and when its answer went out (None: never)."""

    idperson: int
    received: float
    answered: float | None = None


@dataclass
class SchoolApi:
    """A school API stand-in for one host, on that host's link: answers after 20-50 ms and remembers every request."""

    host: str
    asked: list[Asked] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: While set, requests wait for ``released`` before their 20-50 ms: the test's way to catch one in flight.
    holding: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def start(self) -> str:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                match = _PATH.match(self.path)
                if match is None:
                    return send_json(self, 200 if self.path == "/healthz" else 404, {"status": self.path == "/healthz"})
                entry = Asked(int(match.group(1)), time.monotonic())
                with state.lock:
                    state.asked.append(entry)
                if state.holding.is_set():
                    state.released.wait(30)
                time.sleep(random.uniform(0.020, 0.050))
                send_json(self, 200, {"status": True, "data": payment_data(entry.idperson)})
                entry.answered = time.monotonic()
                return None

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.handle_error = lambda request, client_address: None  # a cut-off host resets its connections
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://{self.host}:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self) -> list[Asked]:
        with self.lock:
            return list(self.asked)

    def unanswered(self) -> set[int]:
        return {asked.idperson for asked in self.requests() if asked.answered is None}


@dataclass
class Host:
    """A worker host: its namespace, relays, school API stand-in and sync-worker."""

    name: str
    ns: Namespace
    amqp: Relay
    postgresql: Relay
    school: SchoolApi
    worker: Service
    metrics_url: str


def make_host(name: str, stack: ExitStack, tmp_path) -> Host:
    ns = stack.enter_context(namespace())
    amqp, postgresql = Relay(ns.host, 5672), Relay(ns.host, 5432)
    stack.callback(amqp.close)
    stack.callback(postgresql.close)
    school = SchoolApi(ns.host)
    upstream = school.start()
    stack.callback(school.stop)
    metrics_port = free_port()
    metrics_url = f"http://{ns.address}:{metrics_port}/metrics"
    worker = Service(
        f"sync-worker-host-{name}",
        ns.command(str(BIN / "sync-worker"), "--processes", "1", "--threads", "8"),
        base_env(
            METRICS_PORT=str(metrics_port),
            BROKER_URL=f"amqp://guest:guest@{ns.host}:{amqp.port}/{TEST_VHOST}?heartbeat={HEARTBEAT_S}",
            DATABASE_URL=f"postgresql+psycopg://postgres@{ns.host}:{postgresql.port}/{TEST_DATABASE}",
            UPSTREAM_BASE_URL=upstream,
        ),
        tmp_path,
        ready_url=metrics_url,
    )
    return Host(name, ns, amqp, postgresql, school, worker, metrics_url)


@pytest.fixture
def hosts(services, tmp_path):
    """Hosts A and B (workers not started yet). Afterwards: links restored, workers stopped, everything removed."""
    with ExitStack() as stack:
        made = [make_host("a", stack, tmp_path), make_host("b", stack, tmp_path)]
        services.extend(host.worker for host in made)  # their logs are shown if the test failed
        yield made
        for host in made:
            host.ns.link.restore()  # a cut-off worker would wait out its stop timeout on dead sockets
            host.worker.terminate()
        for host in made:
            host.worker.stop()  # before the namespaces go


def unacknowledged_by_port() -> dict[int, int]:
    """RabbitMQ's own count of unacknowledged messages on each channel of the test vhost, by the peer port."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_channels", "vhost", "name", "messages_unacknowledged", "--no-table-headers"],
        check=True, timeout=60, capture_output=True, text=True,
    ).stdout
    counts: Counter[int] = Counter()
    for line in listed.splitlines():
        vhost, _, rest = line.partition("\t")
        name, _, unacked = rest.rpartition("\t")
        found = _CHANNEL.match(name)
        if vhost == TEST_VHOST and found:
            counts[int(found.group(1))] += int(unacked)
    return counts


def connected_ports() -> set[int]:
    """The peer ports of RabbitMQ's connections to the test vhost."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "vhost", "peer_port", "--no-table-headers"],
        check=True, timeout=60, capture_output=True, text=True,
    ).stdout
    rows = (line.split("\t") for line in listed.splitlines() if line)
    return {int(port) for vhost, port in rows if vhost == TEST_VHOST}


def rabbitmq_log_path() -> str | None:
    """This machine's RabbitMQ log, when it can be read here."""
    paths = [p for p in glob.glob("/var/log/rabbitmq/rabbit@*.log") if not p.endswith("_upgrade.log")]
    return paths[0] if len(paths) == 1 and os.access(paths[0], os.R_OK) else None


def log_since(path: str, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def processed(engine, run_id: int) -> int:
    return get_run(engine, run_id)["processed"]


def test_a_host_cut_off_mid_run_hands_its_messages_to_the_other_and_counts_stay_exact(
    clean, start_web, auth, hosts
):
    a, b = hosts
    # Given 3,000 students and a sync-worker (1 process, 8 threads) on each of two hosts
    seed_students(clean, STUDENTS)
    for host in hosts:
        host.worker.start(timeout=60)
    web = start_web()
    log_path = rabbitmq_log_path()
    log_before = os.path.getsize(log_path) if log_path else 0

    # When a run is started and, a fifth of the way in, host A loses its network both ways
    response = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=10)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    started = time.monotonic()
    wait_until(lambda: processed(clean, run_id) >= CUT_AT, timeout=60, interval=0.05, what=f"{CUT_AT} students done")
    assert all(host.school.requests() for host in hosts), "both hosts should be working before the cut"
    a.school.holding.set()  # answers to A wait a moment, so that A surely has a request in flight when cut off
    wait_until(a.school.unanswered, timeout=10, interval=0.01, what="a request of host A's in flight")
    a.ns.link.cut()
    cut_at = time.monotonic()
    a.school.released.set()  # the answers now go out into the void
    at_cut = processed(clean, run_id)
    a_ports = a.amqp.upstream_ports()

    # Then RabbitMQ still counts A's messages as unacknowledged (its connection is the relay's, alive) ...
    held = unacknowledged_by_port()
    held_by_a = sum(held[port] for port in a_ports)
    assert held_by_a > 0, f"host A held no unacknowledged message when cut off: {held}, A's ports {a_ports}"
    assert at_cut < STUDENTS, "the run ended before the cut: use more students"
    # ... A's stand-in had requests whose answers only went out after the cut: A never got them
    stranded = {asked.idperson for asked in a.school.requests() if asked.answered is None or asked.answered > cut_at}
    assert stranded, "host A had no request in flight at the cut"

    # ... until the heartbeats stop coming and RabbitMQ closes A's connections itself
    wait_until(lambda: not (connected_ports() & a_ports), timeout=6 * HEARTBEAT_S, interval=0.5,
               what="RabbitMQ to close host A's connections")
    closed_at = time.monotonic()
    if log_path:  # the machine's log is readable here: it says why (written a moment after)
        def heartbeats_missed() -> bool:
            log = log_since(log_path, log_before)
            return all(re.search(rf"closing AMQP connection <[^>]+> \(127\.0\.0\.1:{port} -> [^\n]*\n[^\n]*"
                                 rf"missed heartbeats from client, timeout: {HEARTBEAT_S}s", log) for port in a_ports)

        wait_until(heartbeats_missed, timeout=10, interval=0.5,
                   what=f"RabbitMQ's log to say it missed host A's heartbeats on {a_ports}")

    # And the run finishes through host B alone, every student exactly once
    run = wait_for_run(web, auth, run_id, timeout=60)
    assert_exact_outcome(clean, run, STUDENTS, set())
    assert (run["processed"], run["failed"], run["successCount"]) == (STUDENTS, 0, STUDENTS)

    # And B asked for every student A was waiting on when cut off (A's unacknowledged messages, redelivered)
    asked_by_b_later = {asked.idperson for asked in b.school.requests() if asked.received > cut_at}
    assert stranded <= asked_by_b_later, stranded - asked_by_b_later
    asked = Counter(asked.idperson for host in hosts for asked in host.school.requests())
    assert set(asked) == set(idpersons(STUDENTS))  # nobody skipped
    twice = {idperson for idperson, times in asked.items() if times > 1}
    assert stranded <= twice and len(twice) <= held_by_a  # asked again only for A's unacknowledged messages
    b_success = metric(b.metrics_url, "antrian_sync_students_total", outcome="success")
    # B did everything after the cut, A's messages included (give or take what A's 8 threads had on the way to
    # PostgreSQL at the cut: such a statement is still carried out, A just never hears back)
    assert b_success >= STUDENTS - at_cut - 8
    duplicates = b.worker.log().count("duplicate message ignored")  # A stored the outcome, its ack was lost
    print(f"\nat the cut ({cut_at - started:.1f}s in): {at_cut} done, A held {held_by_a} unacknowledged, "
          f"{len(stranded)} in flight at the school API; RabbitMQ closed A's connections {closed_at - cut_at:.1f}s "
          f"later; the run ended {time.monotonic() - started:.1f}s in; B counted {b_success:.0f}; "
          f"{len(twice)} students asked twice; {duplicates} redelivered messages B found done already")

    # When A comes back, its late answers and its reconnection change nothing
    a.ns.link.restore()
    wait_until(lambda: http_ok(a.metrics_url), timeout=30, what="host A reachable again")
    wait_until(lambda: a.amqp.upstream_ports() - a_ports, timeout=60, interval=0.5, what="host A reconnected")
    settled(timeout=60)
    # B's last outcomes are counted after their commit, which ended the run: read B again, now that all is acked
    b_success = metric(b.metrics_url, "antrian_sync_students_total", outcome="success")
    # (A's metric may lag: an outcome A stored just as it was cut off is counted once its answer arrives)
    wait_until(lambda: metric(a.metrics_url, "antrian_sync_students_total", outcome="success") + b_success >= STUDENTS,
               timeout=30, interval=0.5, what="host A's metrics to catch up")
    a_success = metric(a.metrics_url, "antrian_sync_students_total", outcome="success")
    assert a_success + b_success == STUDENTS  # each outcome counted once, on one host
    after = get_run(clean, run_id)
    row = (after["processed"], after["failed"], after["status"])
    with clean.connect() as connection:
        items = connection.execute(text("SELECT count(*), count(DISTINCT idperson) FROM sync_items "
                                        "WHERE run_id = :id AND status = 'success'"), {"id": run_id}).one()
    assert row == (STUDENTS, 0, "finished") and tuple(items) == (STUDENTS, STUDENTS)
