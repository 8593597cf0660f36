"""A development stand-in for the school API, started by ``make run`` and the tests.

``GET /siswa/<idperson>/pembayaran`` answers deterministic payment data per idperson. With
``--transient-rate`` some students first get 503 or 429 (once or twice) and then their data;
with ``--permanent-rate`` some get ``{"status": false}``; ``--latency-ms`` delays each answer.
Which students do what depends only on the idperson and ``--seed``, so tests can predict it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/siswa/(\d+)/pembayaran$")
_MONTHS = ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11"]


@dataclass(frozen=True)
class Behaviour:
    """What the development API does for one student: its first ``failures`` answers are errors."""

    kind: str  # "ok", "transient" or "permanent"
    failures: int = 0


def _unit(seed: int, idperson: int, salt: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{salt}:{idperson}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def behaviour(idperson: int, *, transient_rate: float, permanent_rate: float, seed: int = 0) -> Behaviour:
    """Which answers ``idperson`` gets; transient students fail once or twice, then succeed."""
    draw = _unit(seed, idperson, "kind")
    if draw < permanent_rate:
        return Behaviour("permanent")
    if draw < permanent_rate + transient_rate:
        return Behaviour("transient", failures=1 + int(_unit(seed, idperson, "count") * 2))
    return Behaviour("ok")


def payment_data(idperson: int) -> list[dict]:
    """The student's pembayaran, the same every time for the same idperson."""
    data = []
    for index, month in enumerate(_MONTHS):
        paid = _unit(0, idperson, month) < 0.8
        data.append(
            {
                "bulan": month,
                "jenis": "SPP",
                "nominal": 250_000 + (idperson % 5) * 50_000,
                "status": "lunas" if paid else "belum lunas",
                "kode": f"SPP-{idperson}-{index + 1}",
            }
        )
    return data


class _State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.requests: dict[int, int] = {}
        self.lock = threading.Lock()

    def attempt(self, idperson: int) -> int:
        with self.lock:
            self.requests[idperson] = self.requests.get(idperson, 0) + 1
            return self.requests[idperson]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dev-school-api"
    # Headers and body go out in two writes: without this, Nagle's algorithm and the client's
    # delayed ACK hold every keep-alive answer back by 40 ms.
    disable_nagle_algorithm = True
    state: _State

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/healthz":
            return self._send(200, {"status": "ok"})
        match = _PATH.match(self.path)
        if match is None:
            return self._send(404, {"status": False, "message": "not found"})
        args = self.state.args
        if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
            return self._send(401, {"status": False, "message": "unauthorized"})
        if args.latency_ms:
            time.sleep(args.latency_ms / 1000)
        idperson = int(match.group(1))
        plan = behaviour(
            idperson, transient_rate=args.transient_rate, permanent_rate=args.permanent_rate, seed=args.seed
        )
        if plan.kind == "permanent":
            return self._send(200, {"status": False, "message": f"Data pembayaran siswa {idperson} tidak ditemukan"})
        if plan.kind == "transient" and self.state.attempt(idperson) <= plan.failures:
            if idperson % 2:
                return self._send(429, {"status": False, "message": "too many requests"}, {"Retry-After": "1"})
            return self._send(503, {"status": False, "message": "service unavailable"})
        return self._send(200, {"status": True, "data": payment_data(idperson)})

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
        pass


def make_server(args: argparse.Namespace) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"state": _State(args)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    return server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dev-school-api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--transient-rate", type=float, default=0.0, help="share of students that fail 1-2 times")
    parser.add_argument("--permanent-rate", type=float, default=0.0, help="share of students answered status false")
    parser.add_argument("--seed", type=int, default=0, help="changes which students fail")
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    if not (0 <= args.transient_rate <= 1 and 0 <= args.permanent_rate <= 1):
        parser.error("rates must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = make_server(args)
    print(
        f"dev-school-api: development school API (a stand-in for UPSTREAM_BASE_URL) on "
        f"http://{args.host}:{server.server_port} latency={args.latency_ms:g}ms "
        f"transient={args.transient_rate:g} permanent={args.permanent_rate:g}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
