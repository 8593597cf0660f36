"""The school API client against a real HTTP server on loopback: what is retried and what fails at once."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from sync_api.sync.upstream import PermanentUpstreamError, SchoolApi, TransientUpstreamError
from tests.support import free_port, send_json, serve

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next scripted (status, body, headers, delay)."""

    protocol_version = "HTTP/1.1"
    script: list = []
    seen: list = []
    peers: list = []

    def do_GET(self):  # noqa: N802
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.peers.append(self.client_address)
        status, body, headers, delay = self.script.pop(0)
        time.sleep(delay)
        send_json(self, status, body, headers)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (Scripted,), {"script": [], "seen": [], "peers": []})
    httpd, _url = serve(handler)
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


def client(httpd, token=None, timeout=2.0) -> SchoolApi:
    return SchoolApi(base_url=f"http://127.0.0.1:{httpd.server_port}/", token=token, timeout_s=timeout)


def test_success_returns_data_and_sends_the_token(server):
    httpd, handler = server
    handler.script.append((200, {"status": True, "data": [{"bulan": "2026-07"}]}, {}, 0))
    assert client(httpd, token="s3cret").fetch_pembayaran(42) == [{"bulan": "2026-07"}]
    assert handler.seen == [("/siswa/42/pembayaran", "Bearer s3cret")]


def test_one_pooled_connection_is_reused_for_the_next_student(server):
    httpd, handler = server
    api = client(httpd)
    for n in range(3):
        handler.script.append((200, {"status": True, "data": n}, {}, 0))
    assert [api.fetch_pembayaran(1) for _ in range(3)] == [0, 1, 2]
    assert len(set(handler.peers)) == 1, handler.peers  # one connection, kept alive


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, {"status": False, "message": "Siswa tidak ditemukan"}, "Siswa tidak ditemukan"),
        (404, {"status": False}, "HTTP 404"),
        (401, b"nope", "HTTP 401"),
        (200, b"<html>oops</html>", "not JSON"),
        (200, {"data": 1}, "no boolean 'status'"),
        (200, {"status": True}, "no 'data'"),
    ],
)
def test_permanent_failures(server, status, body, reason):
    httpd, handler = server
    handler.script.append((status, body, {}, 0))
    with pytest.raises(PermanentUpstreamError, match=reason):
        client(httpd).fetch_pembayaran(7)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(server, status):
    httpd, handler = server
    handler.script.append((status, b"", {}, 0))
    with pytest.raises(TransientUpstreamError, match=f"HTTP {status}"):
        client(httpd).fetch_pembayaran(7)


def test_429_is_transient_and_carries_retry_after(server):
    httpd, handler = server
    handler.script.append((429, b"", {"Retry-After": "3"}, 0))
    with pytest.raises(TransientUpstreamError) as caught:
        client(httpd).fetch_pembayaran(7)
    assert caught.value.retry_after_ms == 3000


def test_timeout_is_transient(server):
    httpd, handler = server
    handler.script.append((200, {"status": True, "data": 1}, {}, 1.0))
    with pytest.raises(TransientUpstreamError, match="timed out"):
        client(httpd, timeout=0.2).fetch_pembayaran(7)


def test_connection_refused_is_transient():
    api = SchoolApi(base_url=f"http://127.0.0.1:{free_port()}", token=None, timeout_s=1)
    with pytest.raises(TransientUpstreamError, match="connection error"):
        api.fetch_pembayaran(7)


def test_a_tls_failure_is_permanent(server):
    # Given a plain-HTTP server spoken to over https (a broken certificate chain fails the same way)
    httpd, _handler = server
    api = SchoolApi(base_url=f"https://127.0.0.1:{httpd.server_port}", token=None, timeout_s=2)
    with pytest.raises(PermanentUpstreamError, match="TLS error"):
        api.fetch_pembayaran(7)
