"""Where emails go: an SMTP server (one reused connection per worker thread), or ``.eml`` files for development.

Every failure leaves as :class:`~mailer.errors.EmailRefused` (permanent: a 5xx reply to MAIL,
RCPT or DATA) or :class:`~mailer.errors.EmailDeferred` (anything another attempt may fix).
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from antrian.config import Settings
from mailer.errors import EmailDeferred, EmailRefused

#: Seconds an SMTP connect or reply may take when the caller says nothing (``SMTP_TIMEOUT_S``'s default);
#: well below the actors' time limit.
SMTP_TIMEOUT_S = Settings().smtp_timeout_s
#: The reply of a server that is closing the session (RFC 5321 4.2.3): it sent nothing, but the connection is gone.
SERVICE_CLOSING = 421


@dataclass(frozen=True)
class RawEmail:
    """An email as the bytes DATA carries (CRLF line ends), with its envelope: what the mailer sends.

    ``bytes(raw)`` is the message, as ``bytes(EmailMessage)`` is (``mailer.emails.render.render_raw`` makes them).
    """

    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes

    def __bytes__(self) -> bytes:
        return self.data


#: A connection used within this many seconds is reused without a NOOP first (one round trip less per email): a
#: connection found dropped when its next email starts is replaced and that email sent on the new one, as long as
#: DATA was not reached (see :func:`_gone_before_data`).
NOOP_AFTER_IDLE_S = 5.0


class _Smtp(smtplib.SMTP):
    """smtplib's client, noting whether the current email reached DATA (after which the server may have it)."""

    data_started = False

    def data(self, msg):  # noqa: ANN001, ANN201 - smtplib's own signature
        self.data_started = True
        return super().data(msg)


class _SmtpSsl(smtplib.SMTP_SSL):
    data_started = False

    def data(self, msg):  # noqa: ANN001, ANN201 - smtplib's own signature
        self.data_started = True
        return super().data(msg)


def _hand_over(connection: smtplib.SMTP, message: EmailMessage | RawEmail) -> None:
    if isinstance(message, RawEmail):
        connection.sendmail(message.envelope_from, list(message.recipients), message.data)
    else:
        connection.send_message(message)


def _gone_before_data(connection: _Smtp | _SmtpSsl, exc: BaseException) -> bool:
    """Whether ``exc`` says the connection was closed before this email's DATA: nothing of it reached the server."""
    if connection.data_started or isinstance(exc, (TimeoutError, smtplib.SMTPRecipientsRefused)):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == SERVICE_CLOSING
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, BrokenPipeError))


class Transport(Protocol):
    def send(self, message: EmailMessage | RawEmail, *, name: str) -> object:
        """Hand ``message`` over for delivery; ``name`` (``invoice-K7QM-2XH9``) labels it in files and logs.

        What it returns (FileTransport: the file's path) is for tests and callers that know the transport.
        """

    def close(self) -> None:
        """Release what the calling thread holds."""


class SmtpTransport:
    """Sends over SMTP, each worker thread on its own connection, opened once and reused.

    A connection idle for more than :data:`NOOP_AFTER_IDLE_S` is checked with NOOP before the next email; a busier
    one is not, and when the server turns out to have dropped it (or answers 421) before that email's DATA, nothing
    of the email has been sent yet, so a new connection is opened and the email sent on it. A connection lost once
    DATA has been sent is never resent here: the server may have accepted the data already, so the failure is raised
    for the caller to decide.

    Parameters:
      security: ``none``, ``starttls`` (upgrade after connecting) or ``ssl`` (TLS from the start).
      username, password: log in (AUTH) when a username is given.
      tls_context: how the server's certificate is checked; by default against the system's CAs.
    """

    def __init__(self, *, host: str, port: int, security: str = "none", username: str | None = None,
                 password: str | None = None, timeout_s: float = SMTP_TIMEOUT_S,
                 tls_context: ssl.SSLContext | None = None) -> None:
        if security not in ("none", "starttls", "ssl"):
            raise ValueError(f"unknown SMTP security {security!r}")
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self._tls = tls_context or ssl.create_default_context()
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        return cls(host=settings.smtp_host, port=settings.smtp_port, security=settings.smtp_security,
                   username=settings.smtp_username, password=settings.smtp_password,
                   timeout_s=settings.smtp_timeout_s)

    def send(self, message: EmailMessage | RawEmail, *, name: str = "") -> None:
        connection, reused = self._session()
        try:
            try:
                _hand_over(connection, message)
            except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
                if not (reused and _gone_before_data(connection, exc)):
                    raise
                # The reused connection had been dropped (or the server is closing it) before DATA: the server has
                # nothing of this email, so it goes once more on a new connection.
                self._discard()
                connection = self._open()
                self._local.connection = connection
                _hand_over(connection, message)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = exc.recipients.values()
            if any(code == SERVICE_CLOSING for code, _ in replies):
                self._discard()
            reason = "; ".join(f"{address}: {code} {_text(reply)}" for address, (code, reply) in exc.recipients.items())
            if replies and all(code >= 500 for code, _ in replies):
                raise EmailRefused(f"recipient refused: {reason}", code=min(code for code, _ in replies)) from exc
            raise EmailDeferred(f"recipient deferred: {reason}", code=min(code for code, _ in replies)) from exc
        except smtplib.SMTPNotSupportedError as exc:
            # The address needs SMTPUTF8 and the server has none: no later attempt will change that.
            raise EmailRefused(f"the server cannot take this email: {exc}", code=None) from exc
        except smtplib.SMTPResponseException as exc:
            # The server answered (MAIL or DATA): smtplib has reset the session, which stays usable.
            if exc.smtp_code == SERVICE_CLOSING:
                self._discard()
            reason = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            if exc.smtp_code >= 500:
                raise EmailRefused(f"refused: {reason}", code=exc.smtp_code) from exc
            raise EmailDeferred(f"deferred: {reason}", code=exc.smtp_code) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Dropped, reset or timed out mid-transaction: the server may or may not have the email.
            self._discard()
            raise EmailDeferred(f"SMTP connection to {self.host}:{self.port} lost: {_describe(exc)}") from exc
        except BaseException:
            # Interrupted (the time limit) in the middle of a transaction: the session is in no known state.
            self._discard()
            raise
        finally:
            self._local.used_at = time.monotonic()

    def close(self) -> None:
        """Say QUIT on this thread's connection, if it has one."""
        connection = self._local.__dict__.pop("connection", None)
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _session(self) -> tuple[_Smtp | _SmtpSsl, bool]:
        """This thread's connection, and whether it was open already: the open one when it was used within
        :data:`NOOP_AFTER_IDLE_S` or still answers NOOP, else a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and time.monotonic() - getattr(self._local, "used_at", 0.0) > NOOP_AFTER_IDLE_S \
                and not _answers(connection):
            self._discard()
            connection = None
        if connection is not None:
            connection.data_started = False
            return connection, True
        connection = self._open()
        self._local.connection = connection
        return connection, False

    def _open(self) -> _Smtp | _SmtpSsl:
        connection: _Smtp | _SmtpSsl
        try:
            if self.security == "ssl":
                connection = _SmtpSsl(self.host, self.port, timeout=self.timeout_s, context=self._tls)
            else:
                connection = _Smtp(self.host, self.port, timeout=self.timeout_s)
        except (smtplib.SMTPException, OSError) as exc:
            raise EmailDeferred(f"cannot connect to SMTP server {self.host}:{self.port}: {_describe(exc)}") from exc
        try:
            connection.ehlo()
            if self.security == "starttls":
                connection.starttls(context=self._tls)
                connection.ehlo()
            if self.username:
                connection.login(self.username, self.password or "")
        except BaseException as exc:
            connection.close()
            if isinstance(exc, (smtplib.SMTPException, OSError)):
                # Greeting, TLS or login failed: not this email's fault, and maybe not for long.
                raise EmailDeferred(f"SMTP session with {self.host}:{self.port} failed: {_describe(exc)}") from exc
            raise
        return connection

    def _discard(self) -> None:
        connection = self._local.__dict__.pop("connection", None)
        if connection is not None:
            connection.close()


class FileTransport:
    """Writes each email as ``<folder>/<UTC timestamp>-<name>.eml`` (MAIL_BACKEND=file, for development).

    The file appears whole or not at all: it is written under a temporary name, then renamed.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def send(self, message: EmailMessage | RawEmail, *, name: str = "email") -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.folder / f"{stamp}-{_SAFE_NAME.sub('_', name)}.eml"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".eml.tmp")
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(bytes(message))
                os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a mail viewer run as someone else
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            raise EmailDeferred(f"cannot write {path}: {exc}") from exc
        return path

    def close(self) -> None:
        pass


def make_transport(settings: Settings) -> Transport:
    """The transport MAIL_BACKEND asks for."""
    if settings.mail_backend == "file":
        return FileTransport(settings.mail_file_dir)
    return SmtpTransport.from_settings(settings)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _answers(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
