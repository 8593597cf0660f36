"""The school API client's bounds against a real HTTP server on loopback: size, time, redirects, connection reuse."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import pytest

from sync_api.sync.errors import MAX_REASON_CHARS, bounded
from sync_api.sync.upstream import PermanentUpstreamError, SchoolApi, TransientUpstreamError
from tests.support import send_json, serve

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next scripted callable; remembers paths and client connections."""

    protocol_version = "HTTP/1.1"
    script: list = []
    paths: list = []
    connections: set = set()

    def do_GET(self):  # noqa: N802
        self.paths.append(self.path)
        self.connections.add(self.client_address)
        self.script.pop(0)(self)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (Scripted,), {"script": [], "paths": [], "connections": set()})
    httpd, _url = serve(handler)
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


def client(httpd, *, timeout=2.0, max_bytes=1000) -> SchoolApi:
    return SchoolApi(base_url=f"http://127.0.0.1:{httpd.server_port}", token=None, timeout_s=timeout,
                     max_response_bytes=max_bytes)


def ok(handler):
    send_json(handler, 200, {"status": True, "data": 1})


def raw(status_line: bytes, headers: list[bytes], body: bytes = b"", *, close=False):
    def answer(handler):
        handler.wfile.write(b"HTTP/1.1 " + status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n")
        handler.wfile.write(body)
        handler.wfile.flush()
        if close:
            handler.close_connection = True
    return answer


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_permanent_and_not_followed(server, status):
    httpd, handler = server
    handler.script.append(raw(b"%d Moved" % status, [b"Location: /elsewhere", b"Content-Length: 0"]))
    with pytest.raises(PermanentUpstreamError, match=rf"school API answered {status} \(redirect to '/elsewhere'\)"):
        client(httpd).fetch_pembayaran(7)
    assert handler.paths == ["/siswa/7/pembayaran"]


def test_the_size_limit_is_the_setting(server):
    httpd, handler = server
    handler.script.append(lambda h: send_json(h, 200, {"status": True, "data": "a" * 980}))  # 1,009 bytes
    with pytest.raises(PermanentUpstreamError, match=r"larger than 1000 bytes \(UPSTREAM_MAX_RESPONSE_BYTES\)"):
        client(httpd).fetch_pembayaran(7)
    handler.script.append(lambda h: send_json(h, 200, {"status": True, "data": "a" * 900}))
    assert client(httpd).fetch_pembayaran(7) == "a" * 900


def test_a_chunked_body_past_the_limit_fails(server):
    httpd, handler = server
    chunk = b"x" * 600
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    handler.script.append(raw(b"200 OK", [b"Transfer-Encoding: chunked"], frame * 2 + b"0\r\n\r\n"))
    with pytest.raises(PermanentUpstreamError, match="larger than 1000 bytes"):
        client(httpd).fetch_pembayaran(7)


def test_a_body_trickling_in_ends_at_the_timeout(server):
    # Given an answer whose bytes each arrive well within the per-read timeout, but never all of them
    httpd, handler = server

    def trickle(h):
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
        try:
            for _ in range(500):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    handler.script.append(trickle)
    started = time.monotonic()
    with pytest.raises(TransientUpstreamError, match=r"timed out after 1s"):
        client(httpd, timeout=1.0).fetch_pembayaran(7)
    # well before the 50 s the trickle would last, with room for a loaded machine
    assert time.monotonic() - started < 5


def test_a_body_cut_short_is_transient(server):
    httpd, handler = server
    handler.script.append(raw(b"200 OK", [b"Content-Length: 100"], b'{"status": true', close=True))
    with pytest.raises(TransientUpstreamError, match="connection error"):
        client(httpd).fetch_pembayaran(7)


def test_a_5xx_with_a_large_body_is_still_transient(server):
    httpd, handler = server
    handler.script.append(lambda h: send_json(h, 503, b"z" * 200_000))
    with pytest.raises(TransientUpstreamError, match="^HTTP 503$"):
        client(httpd).fetch_pembayaran(7)


def test_a_4xx_keeps_the_start_of_its_body(server):
    httpd, handler = server
    handler.script.append(lambda h: send_json(h, 404, b"not here " + b"z" * 100_000))
    with pytest.raises(PermanentUpstreamError) as caught:
        client(httpd).fetch_pembayaran(7)
    assert str(caught.value) == "HTTP 404: not here " + "z" * 191


def test_the_connection_is_reused_after_answers_read_to_their_end(server):
    httpd, handler = server
    api = client(httpd)
    handler.script += [ok, lambda h: send_json(h, 503, b"down"), ok, lambda h: send_json(h, 404, b"no"), ok]
    api.fetch_pembayaran(1)
    with pytest.raises(TransientUpstreamError):
        api.fetch_pembayaran(2)
    api.fetch_pembayaran(3)
    with pytest.raises(PermanentUpstreamError):
        api.fetch_pembayaran(4)
    api.fetch_pembayaran(5)
    assert len(handler.connections) == 1


def test_an_abandoned_answer_is_not_reused(server):
    # Given an answer refused half-read (too large), then a normal one
    httpd, handler = server
    api = client(httpd)
    handler.script += [lambda h: send_json(h, 200, b" " * 5000), ok]
    with pytest.raises(PermanentUpstreamError, match="larger than"):
        api.fetch_pembayaran(1)
    # Then the next request goes over a new connection and gets its own answer
    assert api.fetch_pembayaran(2) == 1
    assert len(handler.connections) == 2


def test_a_reason_is_bounded():
    assert bounded("x" * 10) == "x" * 10
    cut = bounded("x" * 10_000)
    assert len(cut) == MAX_REASON_CHARS and cut.endswith("x\u2026")
    assert bounded("a\x00b") == "a\ufffdb"
    assert len(str(PermanentUpstreamError("y" * 10_000))) == MAX_REASON_CHARS
