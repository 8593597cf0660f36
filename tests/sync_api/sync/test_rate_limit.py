"""UPSTREAM_RATE_LIMIT through real processes: two sync-workers of 16 threads each share one budget in PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

import pytest

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from dev.school_api import payment_data
from tests.support import (
    ARRIVAL_JITTER_S,
    ARRIVAL_WINDOW_S,
    busiest_second,
    metric,
    send_json,
    serve,
    settings_for_tests,
    wait_until,
)
from tests.sync_api.sync.helpers import assert_exact_outcome

#: Requests per second the school API may get, and students enough for the run to last about 9 s at that pace.
RATE, STUDENTS = 100, 900


class School(BaseHTTPRequestHandler):
    """An instant school API that records when each request arrived, and how often each student was asked."""

    protocol_version = "HTTP/1.1"
    arrivals: list[float]
    asked: Counter[int]
    lock: threading.Lock

    def do_GET(self):  # noqa: N802
        idperson = int(self.path.split("/")[2])
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.asked[idperson] += 1
        send_json(self, 200, {"status": True, "data": payment_data(idperson)})

    def log_message(self, *args):
        pass


@pytest.fixture
def school():
    handler = type("Handler", (School,), {"arrivals": [], "asked": Counter(), "lock": threading.Lock()})
    httpd, url = serve(handler)
    yield url, handler
    httpd.shutdown()
    httpd.server_close()


def test_two_workers_of_16_threads_keep_to_the_upstream_limit_and_every_student_succeeds(
    clean, school, start_worker
):
    # Given 900 students, an instant school API, and two sync-workers of 16 threads sharing a limit of 100/s
    url, recorded = school
    seed_students(clean, STUDENTS)
    workers = [start_worker(url, processes=1, threads=16, UPSTREAM_RATE_LIMIT=str(RATE)) for _ in range(2)]

    # When a run syncs them all
    broker = make_broker(settings_for_tests())
    run = start_run(clean, broker, by=command_actor())
    broker.close()
    wait_until(lambda: not get_run(clean, run["id"])["isRunning"], timeout=60, what="the run to finish")

    # Then the school API never saw more than the limit plus two leases (5 requests each) in any 2 seconds
    arrivals = recorded.arrivals
    # (counted over 2 s with the arrivals' jitter allowed: a limiter letting 20% too many through fails this)
    most = busiest_second(arrivals, window_s=ARRIVAL_WINDOW_S)
    assert most <= RATE * (ARRIVAL_WINDOW_S + ARRIVAL_JITTER_S), most
    assert max(arrivals) - min(arrivals) >= 8  # the limit, not the workers, set the pace
    # And every student succeeded, asked exactly once: nothing failed, nothing was retried
    assert_exact_outcome(clean, get_run(clean, run["id"]), STUDENTS, set())
    assert len(arrivals) == STUDENTS and set(recorded.asked.values()) == {1}
    for worker in workers:
        assert metric(worker.metrics_url, "dramatiq_message_retries_total") == 0
        assert metric(worker.metrics_url, "dramatiq_message_errors_total") == 0
    # And both workers took tokens of the one limit, a token for each request
    tokens = [metric(worker.metrics_url, "antrian_rate_limit_wait_seconds_count", limit="upstream")
              for worker in workers]
    assert sum(tokens) == STUDENTS and min(tokens) > 0, tokens
