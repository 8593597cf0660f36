"""A real SMTP server for tests (aiosmtpd on loopback) that keeps what it accepts and can be told to refuse."""

from __future__ import annotations

import email
import threading
from email import policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.support import free_port


class SmtpServer:
    """Accepts every message unless ``replies`` holds refusals for the next DATA commands, e.g. ``"451 ..."``.

    ``attempts`` counts DATA commands; ``messages`` holds what was accepted (parsed). ``on_accept`` is
    called with each accepted message before the 250 reply goes out, ``on_data`` at every DATA before
    any reply.
    """

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.replies: list[str] = []
        self.attempts = 0
        self.on_accept = None
        self.on_data = None
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            self.attempts += 1
            if self.on_data is not None:
                self.on_data()
            reply = self.replies.pop(0) if self.replies else "250 Message accepted"
            if not reply.startswith("250"):
                return reply
            message = email.message_from_bytes(envelope.content, policy=policy.default)
            self.messages.append(message)
        if self.on_accept is not None:
            self.on_accept(message)
        return reply

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def env(self) -> dict[str, str]:
        """The settings that point a mailer at this server."""
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_SECURITY": "none", "MAIL_BACKEND": "smtp"}

    def subjects(self) -> list[str]:
        with self._lock:
            return [str(message["Subject"]) for message in self.messages]
