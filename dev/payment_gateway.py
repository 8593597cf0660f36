"""A development stand-in for the payment gateway's status API, started by ``make run`` and the tests.

``GET /v2/<order_id>/status`` (HTTP Basic: the server key, an empty password) answers what the
gateway knows of an order, as Midtrans does: its ``transaction_status``, ``fraud_status``,
``transaction_id``, ``gross_amount`` and ``status_code``, or ``status_code`` 404 when it knows
none. ``POST /dev/orders/<order_id>`` (same auth) records what happened to an order, as a customer
paying or a bank refunding would: sync-api's payment simulator calls it, and tests drive it.
``POST /dev/faults`` makes the next status requests fail (``{"status": 503, "count": 2}``) or hang
(``{"delay_s": 5}``); ``GET /dev/requests`` counts the status requests per order. With a rate limit
(``--rate-limit N``), a status request beyond N in the last second is answered 429 with ``Retry-After: 1``,
as the real gateway does; ``GET /dev/stats`` counts the status requests and those 429s.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import re
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_STATUS = re.compile(r"^/v2/([^/]+)/status$")
_ORDER = re.compile(r"^/dev/orders/([^/]+)$")


class Gateway:
    """What the stand-in knows: each order's latest status, the faults to play, the requests seen."""

    def __init__(self, server_key: str, *, latency_ms: float = 0.0, rate_limit_per_s: int | None = None) -> None:
        self.server_key = server_key
        self.latency_ms = latency_ms
        #: Status requests answered a second at most (a sliding one-second window); None: no limit.
        self.rate_limit_per_s = rate_limit_per_s
        self._answered_at: deque[float] = deque()
        #: Status requests received, and those answered 429 by the rate limit.
        self.status_requests = 0
        self.rate_limited = 0
        self.orders: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, int] = {}
        self.fault: dict[str, Any] = {}
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        #: Where it serves, once :meth:`start` ran.
        self.url = ""

    def record(self, order_id: str, status: dict[str, Any]) -> None:
        """What happened to ``order_id`` at the gateway from now on."""
        with self.lock:
            self.orders[order_id] = {**status, "order_id": order_id}

    def fail(self, *, status: int | None = None, delay_s: float = 0.0, count: int = 1_000_000) -> None:
        """The next ``count`` status requests answer ``status`` (or wait ``delay_s`` first)."""
        with self.lock:
            self.fault = {"status": status, "delay_s": delay_s, "count": count}

    def heal(self) -> None:
        with self.lock:
            self.fault = {}

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a thread of this process; returns the base URL."""
        self._server = make_server(self, host, port)
        threading.Thread(target=self._server.serve_forever, name="dev-payment-gateway", daemon=True).start()
        self.url = f"http://{host}:{self._server.server_port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _over_limit(self) -> bool:
        """Count a status request; True when it is one too many for the last second (it gets a 429)."""
        with self.lock:
            self.status_requests += 1
            if self.rate_limit_per_s is None:
                return False
            now = time.monotonic()
            while self._answered_at and self._answered_at[0] <= now - 1.0:
                self._answered_at.popleft()
            if len(self._answered_at) >= self.rate_limit_per_s:
                self.rate_limited += 1
                return True
            self._answered_at.append(now)
            return False

    def _next_fault(self) -> dict[str, Any]:
        with self.lock:
            if not self.fault or self.fault["count"] <= 0:
                return {}
            self.fault["count"] -= 1
            return dict(self.fault)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dev-payment-gateway"
    disable_nagle_algorithm = True
    gateway: Gateway

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/healthz":
            return self._send(200, {"status": "ok"})
        if self.path == "/dev/requests":
            with self.gateway.lock:
                return self._send(200, dict(self.gateway.requests))
        if self.path == "/dev/stats":
            with self.gateway.lock:
                return self._send(200, {"status_requests": self.gateway.status_requests,
                                        "rate_limited": self.gateway.rate_limited})
        match = _STATUS.match(self.path)
        if match is None:
            return self._send(404, {"status_code": "404", "status_message": "not found"})
        if not self._authorized():
            return self._send(401, {"status_code": "401", "status_message": "unauthorized"})
        order_id = match.group(1)
        with self.gateway.lock:
            self.gateway.requests[order_id] = self.gateway.requests.get(order_id, 0) + 1
        if self.gateway._over_limit():
            return self._send(429, {"status_code": "429", "status_message": "too many requests"},
                              {"Retry-After": "1"})
        fault = self.gateway._next_fault()
        if fault.get("delay_s"):
            time.sleep(fault["delay_s"])
        if fault.get("status"):
            headers = {"Retry-After": "1"} if fault["status"] == 429 else {}
            return self._send(fault["status"], {"status_code": str(fault["status"]), "status_message": "fault"},
                              headers)
        if self.gateway.latency_ms:
            time.sleep(self.gateway.latency_ms / 1000)
        with self.gateway.lock:
            known = self.gateway.orders.get(order_id)
        if known is None:
            return self._send(404, {"status_code": "404", "status_message": "Transaction doesn't exist."})
        return self._send(200, {"status_code": "200", "status_message": "Success, transaction found", **known})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return self._send(401, {"status_code": "401", "status_message": "unauthorized"})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, {"status_message": "malformed JSON"})
        if self.path == "/dev/faults":
            self.gateway.fail(status=body.get("status"), delay_s=float(body.get("delay_s", 0)),
                              count=int(body.get("count", 1_000_000)))
            return self._send(200, {"status_message": "ok"})
        match = _ORDER.match(self.path)
        if match is None or not isinstance(body, dict):
            return self._send(404, {"status_message": "not found"})
        self.gateway.record(match.group(1), body)
        return self._send(200, {"status_message": "recorded"})

    def _authorized(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.gateway.server_key}:".encode()).decode()
        return hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected.encode())

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up waiting (a fault that hangs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass


def make_server(gateway: Gateway, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"gateway": gateway})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev-payment-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--server-key", required=True, help="the PAYMENT_SERVER_KEY callers authenticate with")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each status answer")
    parser.add_argument("--rate-limit", type=int, default=None, metavar="N",
                        help="answer 429 (Retry-After: 1) to status requests beyond N in the last second")
    args = parser.parse_args(argv)
    gateway = Gateway(args.server_key, latency_ms=args.latency_ms, rate_limit_per_s=args.rate_limit)
    server = make_server(gateway, args.host, args.port)
    print(f"dev-payment-gateway: development payment gateway (a stand-in for PAYMENT_API_BASE_URL) on "
          f"http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
