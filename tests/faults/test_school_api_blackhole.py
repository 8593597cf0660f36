"""The school API black-holed for part of a run: it takes connections and requests and never answers.

Each request that falls into the hole ends at the worker's ``UPSTREAM_TIMEOUT_S`` (small here) and is
retried by SPEC's policy. The stand-in remembers what became of every request, so the test knows which
students had all 3 attempts swallowed (they must fail, with a timeout) and which were answered once
the hole closed (they must succeed, their pembayaran stored): exact counts, each student once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler

import pytest
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import start_run
from dev.school_api import payment_data
from tests.support import send_json, serve, settings_for_tests, settled
from tests.sync_api.sync.helpers import assert_exact_outcome, idpersons, wait_for_run

STUDENTS = 40
TIMEOUT_S = 2
HOLED, ANSWERED = "holed", "answered"


class BlackHole:
    """The school API's hole, and what became of each request.

    It opens by itself once ``opens_after`` students have been answered (the run is under way), and closes
    once ``closes_after`` students have had all three attempts swallowed: the test waits for neither by
    polling, so a slow machine only makes the phases longer, never different.
    """

    def __init__(self, *, opens_after: int, closes_after: int) -> None:
        self.opens_after, self.closes_after = opens_after, closes_after
        self.open = False
        self.closed = threading.Event()
        self.ending = threading.Event()
        self.fates: dict[int, list[str]] = defaultdict(list)
        self.lock = threading.Lock()

    def take(self, idperson: int) -> str:
        with self.lock:
            under_way = self._count(lambda its: ANSWERED in its) >= self.opens_after
            if under_way and not self.open and not self.closed.is_set():
                self.open = True
            fate = HOLED if self.open else ANSWERED
            self.fates[idperson].append(fate)
            if self.open and self._count(lambda its: its.count(HOLED) >= 3) >= self.closes_after:
                self.open = False
                self.closed.set()
            return fate

    def _count(self, predicate) -> int:
        return sum(1 for fates in self.fates.values() if predicate(fates))


class School(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hole: BlackHole

    def do_GET(self):  # noqa: N802
        idperson = int(self.path.split("/")[2])
        if self.hole.take(idperson) == HOLED:
            # Never answered: the connection stays open and silent until the test ends.
            self.hole.ending.wait()
            self.close_connection = True
            return
        send_json(self, 200, {"status": True, "data": payment_data(idperson)})

    def log_message(self, *args):
        pass


@pytest.fixture
def school():
    hole = BlackHole(opens_after=8, closes_after=3)
    httpd, url = serve(type("Handler", (School,), {"hole": hole}))
    yield url, hole
    hole.ending.set()
    httpd.shutdown()
    httpd.server_close()


def items(engine, run_id: int) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as connection:
        return {row.idperson: (row.status, row.error) for row in connection.execute(
            text("SELECT idperson, status, error FROM sync_items WHERE run_id = :id"), {"id": run_id})}


def test_a_black_holed_school_api_costs_timeouts_and_retries_and_the_run_ends_exact(
    clean, school, start_worker, start_web, auth
):
    # Given a run against a school API that, once the run is under way, black-holes every request
    # until three students have lost all three attempts
    upstream, hole = school
    seed_students(clean, STUDENTS)
    start_worker(upstream, threads=8, UPSTREAM_TIMEOUT_S=str(TIMEOUT_S))
    broker = make_broker(settings_for_tests())
    run = start_run(clean, broker, by=command_actor())
    broker.close()
    web = start_web()  # meanwhile the run goes on

    # When the hole has opened and closed again
    hole.closed.wait(timeout=90)
    assert hole.closed.is_set(), "the black hole never closed: fewer than three students lost all their attempts"

    # Then the run finishes: those students failed with a timeout, every other one succeeded, each counted once
    finished = wait_for_run(web, auth, run["id"], timeout=60)
    with hole.lock:
        fates = dict(hole.fates)
    swallowed = {idperson for idperson, its in fates.items() if ANSWERED not in its}
    assert set(fates) == set(idpersons(STUDENTS))
    assert len(swallowed) >= 3 and all(fates[idperson] == [HOLED] * 3 for idperson in swallowed)
    assert all(its[-1] == ANSWERED and its.count(ANSWERED) == 1 and len(its) <= 3
               for idperson, its in fates.items() if idperson not in swallowed)
    assert any(len(fates[idperson]) > 1 for idperson in set(fates) - swallowed), "no student recovered by a retry"
    assert_exact_outcome(clean, finished, STUDENTS, swallowed)
    outcome = items(clean, run["id"])
    for idperson in swallowed:
        assert outcome[idperson] == ("failed", f"timed out after {TIMEOUT_S}s (after 3 attempts)")
    assert sum(1 for its in fates.values() if its[0] == ANSWERED) >= 8  # the hole opened mid-run, not at its start

    # And each failed student is kept once as a failed job, after its three attempts; nothing else is in flight
    settled(timeout=60)
    with clean.connect() as connection:
        jobs = connection.execute(text("SELECT args, attempts FROM failed_jobs")).all()
    assert sorted(job.args[0] for job in jobs) == sorted(swallowed)
    assert {job.attempts for job in jobs} == {3}
