"""SPEC's retry policy through a real worker: 3 attempts for what can pass, none for what cannot."""

from __future__ import annotations

import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler

import pytest
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from tests.support import queue_depth, send_json, serve, settings_for_tests, wait_until
from tests.sync_api.sync.helpers import idpersons

ALWAYS_503, RATE_LIMITED, NOT_FOUND, STATUS_FALSE, FLAKY, FINE = idpersons(6)


class School(BaseHTTPRequestHandler):
    """A school API with a scripted answer per student; remembers when each student was asked."""

    protocol_version = "HTTP/1.1"
    asked: dict[int, list[float]] = defaultdict(list)

    def do_GET(self):  # noqa: N802
        idperson = int(self.path.split("/")[2])
        self.asked[idperson].append(time.monotonic())
        attempt = len(self.asked[idperson])
        if idperson == ALWAYS_503:
            return self.answer(503, {"status": False, "message": "down"})
        if idperson == RATE_LIMITED and attempt == 1:
            return self.answer(429, {"status": False}, {"Retry-After": "2"})
        if idperson == NOT_FOUND:
            return self.answer(404, {"status": False, "message": "no such student"})
        if idperson == STATUS_FALSE:
            return self.answer(200, {"status": False, "message": "Siswa nonaktif"})
        if idperson == FLAKY and attempt < 3:
            return self.answer(502, {})
        return self.answer(200, {"status": True, "data": {"idperson": idperson}})

    def answer(self, status, body, headers=None):
        send_json(self, status, body, headers)

    def log_message(self, *args):
        pass


@pytest.fixture
def school():
    handler = type("Handler", (School,), {"asked": defaultdict(list)})
    httpd, url = serve(handler)
    yield url, handler.asked
    httpd.shutdown()
    httpd.server_close()


def failed_jobs(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(
            text("SELECT args, attempts, exception FROM failed_jobs WHERE queue_name = 'sync-pembayaran'"))]


def test_each_failure_gets_the_attempts_spec_gives_it(clean, school, start_worker):
    # Given six students whose school API answers differ
    upstream, asked = school
    seed_students(clean, 6)
    start_worker(upstream, threads=4)
    broker = make_broker(settings_for_tests())

    # When they are synced
    run = start_run(clean, broker, by=command_actor())
    broker.close()
    wait_until(lambda: not get_run(clean, run["id"])["isRunning"], timeout=60, what="the run to finish")

    # Then 5xx is tried three times and fails; 429 waits for Retry-After; 4xx and status false fail at once
    assert len(asked[ALWAYS_503]) == 3
    assert len(asked[RATE_LIMITED]) == 2
    assert asked[RATE_LIMITED][1] - asked[RATE_LIMITED][0] >= 1.9
    assert len(asked[NOT_FOUND]) == 1
    assert len(asked[STATUS_FALSE]) == 1
    assert len(asked[FLAKY]) == 3
    assert len(asked[FINE]) == 1
    with clean.connect() as connection:
        items = {row.idperson: row for row in connection.execute(
            text("SELECT idperson, status, error FROM sync_items WHERE run_id = :id"), {"id": run["id"]}
        )}
    assert items[ALWAYS_503].status == "failed" and items[ALWAYS_503].error == "HTTP 503 (after 3 attempts)"
    assert items[NOT_FOUND].status == "failed" and "HTTP 404" in items[NOT_FOUND].error
    assert items[STATUS_FALSE].status == "failed" and "Siswa nonaktif" in items[STATUS_FALSE].error
    assert {items[i].status for i in (RATE_LIMITED, FLAKY, FINE)} == {"success"}
    final = get_run(clean, run["id"])
    assert (final["processed"], final["failed"], final["successCount"]) == (6, 3, 3)

    # And the failed messages are kept as failed jobs, once each, with their attempts and exception
    wait_until(lambda: len(failed_jobs(clean)) == 3, timeout=10, what="three failed jobs")
    kept = {row["args"][0]: row for row in failed_jobs(clean)}
    assert set(kept) == {ALWAYS_503, NOT_FOUND, STATUS_FALSE}
    assert kept[ALWAYS_503]["attempts"] == 3 and "HTTP 503" in kept[ALWAYS_503]["exception"]
    assert kept[NOT_FOUND]["attempts"] == 1 and kept[STATUS_FALSE]["attempts"] == 1
    assert queue_depth("sync-pembayaran.XQ") == 0
