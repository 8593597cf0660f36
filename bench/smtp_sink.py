"""A counting SMTP sink for part (f), run in a process of its own so its work does not share the bench's GIL.

    python -m bench.smtp_sink --port 2525 --http-port 2526

It accepts every message (aiosmtpd, no TLS, no AUTH), keeps nothing but the time it arrived and its
Message-ID, and answers ``GET /stats`` on the HTTP port with JSON: ``count``, ``first`` and ``last``
(epoch seconds), ``distinct_message_ids``, ``duplicates`` (messages whose Message-ID came before)
and ``connections`` (SMTP sessions opened). SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time

from aiosmtpd.smtp import SMTP

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Counter:
    """The aiosmtpd handler: every DATA is accepted and counted."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.ids: set[bytes] = set()
        self.duplicates = 0
        self.connections = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        now = time.time()
        self.count += 1
        if self.first is None:
            self.first = now
        self.last = now
        headers = envelope.content.split(b"\r\n\r\n", 1)[0]
        match = _MESSAGE_ID.search(headers)
        key = match.group(1) if match else b"none-%d" % self.count
        if key in self.ids:
            self.duplicates += 1
        self.ids.add(key)
        return "250 OK"

    def stats(self) -> dict:
        return {"count": self.count, "first": self.first, "last": self.last,
                "distinct_message_ids": len(self.ids), "duplicates": self.duplicates,
                "connections": self.connections}


class CountingSMTP(SMTP):
    def connection_made(self, transport) -> None:
        self.event_handler.connections += 1
        super().connection_made(transport)


async def _http(counter: Counter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.0 answer: the stats as JSON for any GET, then close."""
    try:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        body = json.dumps(counter.stats()).encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    finally:
        writer.close()


async def serve(host: str, port: int, http_port: int) -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: CountingSMTP(counter, hostname="bench-sink"), host, port)
    http = await asyncio.start_server(lambda r, w: _http(counter, r, w), host, http_port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"smtp sink on {host}:{port}, stats on http://{host}:{http_port}/stats", flush=True)
    await stop.wait()
    smtp.close()
    http.close()
    print(f"smtp sink stopping: {json.dumps(counter.stats())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.smtp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.http_port))


if __name__ == "__main__":
    main()
