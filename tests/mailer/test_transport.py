"""SmtpTransport against a real SMTP server (aiosmtpd on loopback), and FileTransport's .eml files."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from antrian.config import load_settings, replace
from mailer.errors import EmailDeferred, EmailRefused
from mailer.transport import FileTransport, SmtpTransport
from tests.support import free_port, wait_until

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


class Mailbox:
    """An aiosmtpd handler that keeps what it receives and refuses some recipients on purpose."""

    def __init__(self) -> None:
        self.received: list[tuple[tuple[str, int], str, bytes]] = []  # (client address, auth login, content)
        self.sessions = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused@"):
            return "550 5.1.1 No such mailbox"
        if address.startswith("greylisted@"):
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(address.startswith("spam@") for address in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        login = session.auth_data.login.decode() if session.authenticated else None
        self.received.append((session.peer, login, envelope.original_content))
        self.sessions.append(server)
        return "250 Message accepted"


@contextmanager
def serving(handler, **smtp) -> Iterator[Controller]:
    """An aiosmtpd server on a free loopback port, in its own thread, for the ``with`` block."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **smtp)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox():
    handler = Mailbox()
    with serving(handler) as controller:
        yield handler, controller


def _email(to: str = "siti@example.com", subject: str = "Invoice K7QM-2XH9") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "antrian <noreply@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = "<invoice.K7QM-2XH9@example.com>"
    message.set_content("Booking K7QM-2XH9\n")
    return message


def _transport(controller, **options) -> SmtpTransport:
    return SmtpTransport(host=controller.hostname, port=controller.port, timeout_s=5, **options)


def test_one_connection_carries_many_emails(mailbox):
    handler, controller = mailbox
    transport = _transport(controller)
    try:
        transport.send(_email(subject="first"), name="invoice-A")
        transport.send(_email(subject="second"), name="invoice-B")
    finally:
        transport.close()
    assert len(handler.received) == 2
    (first_peer, _, first), (second_peer, _, second) = handler.received
    assert first_peer == second_peer
    assert b"Subject: first" in first and b"Subject: second" in second


def test_each_thread_has_its_own_connection(mailbox):
    handler, controller = mailbox
    transport = _transport(controller)

    def send_and_close() -> None:
        transport.send(_email(), name="invoice-A")
        transport.close()

    threads = [threading.Thread(target=send_and_close) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len({peer for peer, _, _ in handler.received}) == 2


def test_a_dropped_connection_is_replaced_before_the_next_email(mailbox):
    handler, controller = mailbox
    transport = _transport(controller)
    try:
        transport.send(_email(subject="before"), name="invoice-A")
        server = handler.sessions[-1]
        controller.loop.call_soon_threadsafe(server.transport.close)
        wait_until(lambda: server.transport is None, timeout=5, what="the server to drop the connection")
        transport.send(_email(subject="after"), name="invoice-B")
    finally:
        transport.close()
    (first_peer, _, _), (second_peer, _, content) = handler.received
    assert first_peer != second_peer
    assert b"Subject: after" in content


@pytest.mark.parametrize("recipient", ["refused@example.com", "spam@example.com"])
def test_a_5xx_refusal_is_permanent_and_the_connection_stays_usable(mailbox, recipient):
    handler, controller = mailbox
    transport = _transport(controller)
    try:
        with pytest.raises(EmailRefused) as refused:
            transport.send(_email(to=recipient), name="invoice-A")
        assert refused.value.code in (550, 554)
        transport.send(_email(), name="invoice-B")
    finally:
        transport.close()
    assert len(handler.received) == 1


def test_a_4xx_reply_is_a_deferral(mailbox):
    handler, controller = mailbox
    transport = _transport(controller)
    try:
        with pytest.raises(EmailDeferred) as deferred:
            transport.send(_email(to="greylisted@example.com"), name="invoice-A")
    finally:
        transport.close()
    assert deferred.value.code == 451
    assert not isinstance(deferred.value, EmailRefused)
    assert handler.received == []


def test_no_server_is_a_deferral():
    transport = SmtpTransport(host="127.0.0.1", port=free_port(), timeout_s=2)
    with pytest.raises(EmailDeferred, match="cannot connect"):
        transport.send(_email(), name="invoice-A")


def test_a_server_that_greets_and_then_hangs_is_a_deferral_after_smtp_timeout_s():
    # Given a server that sends its greeting and then never answers again (EHLO included)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def greet_then_hang() -> None:
        client, _ = listener.accept()
        accepted.append(client)
        client.sendall(b"220 stuck.example ESMTP\r\n")

    threading.Thread(target=greet_then_hang, daemon=True).start()
    settings = replace(load_settings({}), smtp_port=listener.getsockname()[1], smtp_timeout_s=0.5)
    transport = SmtpTransport.from_settings(settings)
    assert transport.timeout_s == 0.5
    try:
        # Then the send gives up after SMTP_TIMEOUT_S, as a deferral another attempt may fix
        with pytest.raises(EmailDeferred, match="timed out"):
            transport.send(_email(), name="invoice-A")
    finally:
        for sock in (*accepted, listener):
            sock.close()


class Accounts:
    def __init__(self, **passwords: str) -> None:
        self.passwords = passwords
        self.tried: list[str] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.tried.append(login)
        if self.passwords.get(login) != password:
            return AuthResult(success=False, handled=False)  # handled=False: aiosmtpd replies 535
        return AuthResult(success=True, auth_data=auth_data)


@pytest.fixture
def authenticating_mailbox():
    handler, accounts = Mailbox(), Accounts(mailer="s3cret")
    with serving(handler, authenticator=accounts, auth_require_tls=False) as controller:
        yield handler, controller, accounts


def test_username_and_password_log_in(authenticating_mailbox):
    handler, controller, accounts = authenticating_mailbox
    transport = _transport(controller, username="mailer", password="s3cret")
    try:
        transport.send(_email(), name="invoice-A")
        transport.send(_email(), name="invoice-B")
    finally:
        transport.close()
    assert accounts.tried == ["mailer"]  # once, for the one connection
    assert [login for _, login, _ in handler.received] == ["mailer", "mailer"]


def test_a_wrong_password_is_a_deferral(authenticating_mailbox):
    handler, controller, accounts = authenticating_mailbox
    transport = _transport(controller, username="mailer", password="wrong")
    with pytest.raises(EmailDeferred, match="535"):
        transport.send(_email(), name="invoice-A")
    assert handler.received == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, as file paths."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def _server_tls(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_a_verified_certificate(certificate, security):
    handler = Mailbox()
    if security == "ssl":
        tls = {"ssl_context": _server_tls(certificate)}  # TLS from the first byte
    else:
        tls = {"tls_context": _server_tls(certificate), "require_starttls": True}  # no MAIL before STARTTLS
    with serving(handler, **tls) as controller:
        trusting = ssl.create_default_context(cafile=certificate[0])
        transport = _transport(controller, security=security, tls_context=trusting)
        try:
            transport.send(_email(), name="invoice-A")
            transport.send(_email(), name="invoice-B")
        finally:
            transport.close()
        untrusting = _transport(controller, security=security)  # the system's CAs do not know this certificate
        with pytest.raises(EmailDeferred, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.send(_email(), name="invoice-C")
    assert len(handler.received) == 2
    assert handler.received[0][0] == handler.received[1][0]


def test_file_transport_writes_a_whole_eml_file(tmp_path):
    folder = tmp_path / "mail" / "out"
    transport = FileTransport(folder)
    path = transport.send(_email(), name="invoice-K7QM-2XH9")
    assert path.parent == folder
    assert path.name.endswith("-invoice-K7QM-2XH9.eml")
    assert [file.name for file in folder.iterdir()] == [path.name]  # no temporary file left behind
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert parsed["Subject"] == "Invoice K7QM-2XH9"
    assert parsed["Message-ID"] == "<invoice.K7QM-2XH9@example.com>"
    assert parsed.get_content().strip() == "Booking K7QM-2XH9"
