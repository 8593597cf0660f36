"""Fixtures for failed jobs, retries and queues: a school API that can be down, SMTP, and every worker."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support import Service, send_json, serve


class SchoolApi:
    """The school's API on loopback: students in ``down`` get a 503 (a transient failure) until removed,
    those in ``refused`` a ``status: false`` answer (a permanent one)."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.refused: set[int] = set()
        self.calls: Counter[int] = Counter()
        self._lock = threading.Lock()
        school = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                idperson = int(self.path.split("/")[2])
                with school._lock:
                    school.calls[idperson] += 1
                    down, refused = idperson in school.down, idperson in school.refused
                if down:
                    send_json(self, 503, {"status": False, "message": "sedang pemeliharaan"})
                elif refused:
                    send_json(self, 200, {"status": False, "message": "siswa tidak ditemukan"})
                else:
                    send_json(self, 200, {"status": True, "data": {"idperson": idperson, "tagihan": []}})

            def log_message(self, *args):
                pass

        self.httpd, self.url = serve(Handler)

    def recover(self) -> None:
        with self._lock:
            self.down.clear()
            self.refused.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def school_api() -> Iterator[SchoolApi]:
    api = SchoolApi()
    yield api
    api.stop()


@pytest.fixture
def workers(start_dramatiq, school_api, smtp_server):
    """Start every worker deployable of SPEC: sync-worker, mailer and booking-expiry."""

    def start(*names: str, **env: str) -> dict[str, Service]:
        names = names or ("sync-worker", "mailer", "booking-expiry")
        extra = {
            "sync-worker": {"UPSTREAM_BASE_URL": school_api.url},
            "mailer": smtp_server.env(),
            "booking-expiry": {},
        }
        return {name: start_dramatiq(name, processes=1, threads=4, **extra[name], **env) for name in names}

    return start
