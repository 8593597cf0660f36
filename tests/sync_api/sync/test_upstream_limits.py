"""The school API client's limits through a real sync-worker: no redirect followed, no answer read past
``UPSTREAM_MAX_RESPONSE_BYTES``, no failure reason stored without bound (issue 16, item 3)."""

from __future__ import annotations

import zlib
from http.server import BaseHTTPRequestHandler

import psutil
import pytest
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from tests.support import send_json, serve, settings_for_tests, wait_until
from tests.sync_api.sync.helpers import idpersons

MIB = 1024 * 1024
#: What a misbehaving school API sends for one student.
HUGE_BYTES = 50 * MIB
#: How much a worker process's peak RSS may grow while it refuses the huge answers.
MAX_GROWTH_BYTES = 10 * MIB
BLOCK = b" " * (64 * 1024)

REDIRECTED, LONG_REFUSAL, LONG_404, HUGE_WITH_LENGTH, HUGE_CHUNKED, HUGE_GZIP, FINE_1, FINE_2 = idpersons(8)
SIZE_REASON = "school API answer is larger than 1048576 bytes (UPSTREAM_MAX_RESPONSE_BYTES)"


def _gzip_of_huge() -> bytes:
    """A gzip body that is ~50 KiB on the wire and 50 MiB once decoded."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(BLOCK) for _ in range(HUGE_BYTES // len(BLOCK))]
    return b"".join(parts) + compressor.flush()


class School(BaseHTTPRequestHandler):
    """A school API that misbehaves for some students once ``misbehave`` is set; records every request."""

    protocol_version = "HTTP/1.1"
    misbehave = False
    paths: list[str] = []
    #: idperson → bytes of its huge body written before the client stopped reading (or all of them).
    sent: dict[int, int] = {}
    gzip_body = b""

    def do_GET(self):  # noqa: N802
        self.paths.append(self.path)
        parts = self.path.split("/")
        if parts[1] != "siswa":
            return send_json(self, 200, {"status": True, "data": "followed a redirect"})
        idperson = int(parts[2])
        if not self.misbehave or idperson in (FINE_1, FINE_2):
            return send_json(self, 200, {"status": True, "data": {"idperson": idperson}})
        if idperson == REDIRECTED:
            target = f"http://127.0.0.1:{self.server.server_port}/elsewhere/{idperson}"
            return send_json(self, 302, {"status": False, "message": "moved"}, {"Location": target})
        if idperson == LONG_REFUSAL:
            return send_json(self, 200, {"status": False, "message": "x" * 100_000})
        if idperson == LONG_404:
            return send_json(self, 404, b"<html>" + b"y" * 100_000 + b"</html>")
        if idperson == HUGE_GZIP:
            return send_json(self, 200, self.gzip_body, {"Content-Encoding": "gzip"})
        self.send_huge(idperson, chunked=idperson == HUGE_CHUNKED)

    def send_huge(self, idperson: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(HUGE_BYTES))
        self.end_headers()
        sent = 0
        frame = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if chunked else BLOCK
        try:
            while sent < HUGE_BYTES:
                self.wfile.write(frame)
                sent += len(BLOCK)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        self.sent[idperson] = sent

    def log_message(self, *args):
        pass


@pytest.fixture
def school():
    handler = type("Handler", (School,), {"paths": [], "sent": {}, "misbehave": False, "gzip_body": b""})
    httpd, url = serve(handler)
    yield url, handler
    httpd.shutdown()
    httpd.server_close()


def run_sync(engine) -> dict:
    broker = make_broker(settings_for_tests())
    try:
        run = start_run(engine, broker, by=command_actor())
    finally:
        broker.close()
    wait_until(lambda: not get_run(engine, run["id"])["isRunning"], timeout=60, what="the run to finish")
    return get_run(engine, run["id"])


def items(engine, run_id: int) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT idperson, status, error FROM sync_items WHERE run_id = :id"), {"id": run_id}
        )
        return {row.idperson: (row.status, row.error) for row in rows}


def failed_job_exceptions(engine) -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT args, exception FROM failed_jobs WHERE queue_name = 'sync-pembayaran'"))
        return {row.args[0]: row.exception for row in rows}


def peak_rss(pid: int) -> dict[int, int]:
    """Each process of the worker's tree (Dramatiq's main process and its workers): its peak RSS (VmHWM), in bytes."""
    peaks = {}
    main = psutil.Process(pid)
    for process in [main, *main.children(recursive=True)]:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peaks[process.pid] = int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return peaks


def test_a_redirect_fails_its_student_and_is_never_followed(clean, school, start_worker):
    # Given a school API that answers 302 for one student and normally for the others
    upstream, handler = school
    handler.misbehave = True
    seed_students(clean, 8)
    start_worker(upstream, threads=4)

    # When they are synced
    run = run_sync(clean)

    # Then that student fails at once with a reason naming the redirect, the others succeed
    outcome = items(clean, run["id"])
    status, error = outcome[REDIRECTED]
    assert status == "failed"
    assert error.startswith("school API answered 302 (redirect to 'http://127.0.0.1:")
    assert error.endswith(f"/elsewhere/{REDIRECTED}'); redirects are not followed")
    assert outcome[FINE_1][0] == outcome[FINE_2][0] == "success"
    # And the redirect's target was never asked for, nor the student asked twice
    assert handler.paths.count(f"/siswa/{REDIRECTED}/pembayaran") == 1
    assert not [path for path in handler.paths if not path.startswith("/siswa/")]


def test_a_long_upstream_error_is_stored_truncated(clean, school, start_worker):
    # Given a school API that refuses one student with a 100 KB message and answers 404 with a 100 KB page
    upstream, handler = school
    handler.misbehave = True
    seed_students(clean, 8)
    start_worker(upstream, threads=4)

    # When they are synced
    run = run_sync(clean)

    # Then each fails with its reason cut to 500 characters, in the run's failures and its failed job
    outcome = items(clean, run["id"])
    refusal, not_found = outcome[LONG_REFUSAL][1], outcome[LONG_404][1]
    assert refusal.startswith("school API refused: xxx") and refusal.endswith("x\u2026") and len(refusal) == 500
    assert not_found == "HTTP 404: <html>" + "y" * 194
    wait_until(lambda: {LONG_REFUSAL, LONG_404} <= set(failed_job_exceptions(clean)), timeout=10, what="failed jobs")
    kept = failed_job_exceptions(clean)
    assert "school API refused: xxx" in kept[LONG_REFUSAL] and len(kept[LONG_REFUSAL]) < 600
    assert "HTTP 404" in kept[LONG_404] and len(kept[LONG_404]) < 600


def test_a_50_mib_answer_fails_its_student_and_the_worker_memory_stays_flat(clean, school, start_worker):
    # Given a worker that has synced once (its memory warmed up) and a school API that then answers
    # 50 MiB for three students: with a Content-Length, chunked without one, and gzip-compressed to 50 KiB
    upstream, handler = school
    handler.gzip_body = _gzip_of_huge()
    seed_students(clean, 8)
    worker = start_worker(upstream, threads=4)
    assert run_sync(clean)["failed"] == 0
    before = peak_rss(worker.process.pid)
    handler.misbehave = True

    # When they are synced again
    run = run_sync(clean)

    # Then each of those three fails at once with the size reason; the well-behaved ones succeed
    outcome = items(clean, run["id"])
    for idperson in (HUGE_WITH_LENGTH, HUGE_CHUNKED, HUGE_GZIP):
        assert outcome[idperson] == ("failed", SIZE_REASON), idperson
        assert handler.paths.count(f"/siswa/{idperson}/pembayaran") == 2  # once per run: not retried
    assert outcome[FINE_1][0] == outcome[FINE_2][0] == "success"

    # And no worker process's peak memory grew anywhere near 50 MiB
    after = peak_rss(worker.process.pid)
    growth = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert len(after) >= 2 and max(growth.values()) < MAX_GROWTH_BYTES, (before, after)

    # And the server saw the client stop reading long before the end of the huge bodies
    wait_until(lambda: {HUGE_WITH_LENGTH, HUGE_CHUNKED} <= set(handler.sent), timeout=30, what="the server to notice")
    assert handler.sent[HUGE_WITH_LENGTH] < HUGE_BYTES / 2 and handler.sent[HUGE_CHUNKED] < HUGE_BYTES / 2
