"""An SMTP server that accepts and then hangs: each hung attempt times out, is retried, and every email is sent once.

The mailer talks to a real SMTP server (aiosmtpd, tests/smtp.py) through :class:`HangingFront`, which
passes the session through until a transaction it was told to hang: then it stops answering, either at
``RCPT TO`` (mid-transaction) or after the whole message has been sent (``DATA`` accepted with 354, the
final dot never passed on, so the server behind never accepts it and never replies). The connection
stays open and silent, as a stuck server's does; only the mailer's SMTP timeout (``SMTP_TIMEOUT_S``,
small here) ends the attempt.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from contextlib import suppress

import pytest
import requests
from sqlalchemy import text

from tests.smtp import SmtpServer
from tests.support import settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

HANG_AT_RCPT, HANG_AFTER_DATA, PASS = "hang at RCPT", "hang after DATA", "pass"


class HangingFront:
    """Forwards SMTP sessions on 127.0.0.1:``port`` to ``server``, hanging the transactions ``script`` names.

    ``script`` maps a recipient address to what its successive transactions meet (``PASS`` once the
    list is used up). ``transactions`` records, per recipient, what each of its transactions met.
    """

    def __init__(self, server: SmtpServer, script: dict[str, list[str]]) -> None:
        self.server = server
        self.script = script
        self.transactions: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {**self.server.env(), "SMTP_PORT": str(self.port)}

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.server.port))
            with self._lock:
                self._sockets += [client, upstream]
            hung = threading.Event()
            threading.Thread(target=self._commands, args=(client, upstream, hung), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, hung), daemon=True).start()

    def _next(self, recipient: str) -> str:
        with self._lock:
            seen = self.transactions[recipient]
            planned = self.script.get(recipient, [])
            behaviour = planned[len(seen)] if len(seen) < len(planned) else PASS
            seen.append(behaviour)
            return behaviour

    def _commands(self, client: socket.socket, upstream: socket.socket, hung: threading.Event) -> None:
        """Client to server, line by line: where a hang is due, nothing more goes through, either way."""
        pending, in_data, behaviour = b"", False, PASS
        try:
            while chunk := client.recv(65536):
                if hung.is_set():
                    continue  # read and dropped: a stuck server's buffers, not a closed window
                pending += chunk
                *lines, pending = pending.split(b"\r\n")
                out = []
                for line in lines:
                    command = line.upper()
                    if in_data:
                        if line == b"." and behaviour == HANG_AFTER_DATA:
                            hung.set()
                            break
                        in_data = line != b"."
                    elif command.startswith(b"RCPT TO:"):
                        recipient = line[8:].strip().split(b">")[0].lstrip(b"<").decode()
                        behaviour = self._next(recipient)
                        if behaviour == HANG_AT_RCPT:
                            hung.set()
                            break
                    elif command == b"DATA":
                        in_data = True
                    out.append(line + b"\r\n")
                if out:
                    upstream.sendall(b"".join(out))
        except OSError:
            pass
        for sock in (client, upstream):  # the mailer gave up (or left): the server behind sees it go
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @staticmethod
    def _replies(upstream: socket.socket, client: socket.socket, hung: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                if not hung.is_set():
                    client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def web(clean, start_web):
    return start_web(BOOKING_EXPIRY_MINUTES="30")


def delivery(engine, booking_id: int) -> dict:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, attempts, last_error FROM email_deliveries "
                 "WHERE booking_id = :id AND kind = 'invoice'"),
            {"id": booking_id},
        ).one_or_none()
    return {} if row is None else dict(row._mapping)


def failed_jobs(engine) -> list:
    with engine.connect() as connection:
        return connection.execute(text("SELECT id, args, attempts, exception FROM failed_jobs")).all()


def received(smtp_server: SmtpServer, code: str) -> int:
    """Messages the real SMTP server accepted for the booking ``code`` (by its Message-ID)."""
    return sum(1 for message in list(smtp_server.messages) if f"invoice.{code}@" in str(message["Message-ID"]))


def test_a_hanging_smtp_server_costs_attempts_but_every_email_goes_once(
    web, auth, engine, smtp_server, start_dramatiq
):
    # Given an SMTP server that hangs some transactions: Ani's first two, Budi's every one, none of Citra's
    ani, budi, citra = "ani@example.com", "budi@example.com", "citra@example.com"
    front = HangingFront(smtp_server, {ani: [HANG_AT_RCPT, HANG_AFTER_DATA], budi: [HANG_AFTER_DATA] * 3})
    try:
        start_dramatiq("mailer", threads=4, SMTP_TIMEOUT_S="2", MAIL_FROM_ADDRESS="tickets@tripin.example",
                       **front.env())
        tour = create_tour(web, auth, quota=10)
        bookings = {email: book(web, auth, tour["id"], quantity=1, customer_email=email).json()
                    for email in (ani, budi, citra)}

        # When the mailer sends their invoices
        # Then Ani's goes on the third attempt, Citra's at once, and Budi's runs out of attempts
        wait_until(lambda: delivery(engine, bookings[ani]["id"]).get("status") == "sent", timeout=60,
                   what="Ani's invoice after two hung attempts")
        wait_until(lambda: failed_jobs(engine), timeout=60, what="Budi's invoice kept as a failed job")
        settled(timeout=60)
        assert front.transactions[ani] == [HANG_AT_RCPT, HANG_AFTER_DATA, PASS]
        assert front.transactions[budi] == [HANG_AFTER_DATA] * 3
        assert front.transactions[citra] == [PASS]
        assert delivery(engine, bookings[ani]["id"])["attempts"] == 3
        assert delivery(engine, bookings[citra]["id"]) | {"last_error": None} == {
            "status": "sent", "attempts": 1, "last_error": None}
        gave_up = delivery(engine, bookings[budi]["id"])
        assert gave_up["status"] == "failed" and gave_up["attempts"] == 3
        assert "timed out" in gave_up["last_error"], gave_up["last_error"]
        [job] = failed_jobs(engine)
        assert job.args == [bookings[budi]["id"]] and job.attempts == 3
        # the hung transactions never reached the server behind: one DATA each for Ani and Citra
        assert smtp_server.attempts == 2
        assert [received(smtp_server, bookings[e]["code"]) for e in (ani, budi, citra)] == [1, 0, 1]

        # When the server behaves again and the operator retries Budi's invoice
        front.script.pop(budi)
        response = requests.post(f"{web}/api/jobs/failed/{job.id}/retry", headers=auth, timeout=30)
        assert response.status_code == 202, response.text

        # Then it is sent, once, and every booking has exactly one invoice at the server
        wait_until(lambda: delivery(engine, bookings[budi]["id"]).get("status") == "sent", timeout=60,
                   what="Budi's invoice after the retry")
        settled(timeout=60)
        assert front.transactions[budi] == [HANG_AFTER_DATA] * 3 + [PASS]
        assert delivery(engine, bookings[budi]["id"])["attempts"] == 4
        assert [received(smtp_server, bookings[e]["code"]) for e in (ani, budi, citra)] == [1, 1, 1]
        assert smtp_server.attempts == 3 and len(smtp_server.messages) == 3
        assert failed_jobs(engine) == []
    finally:
        front.close()
