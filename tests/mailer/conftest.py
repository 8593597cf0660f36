"""Fixtures for the mailer's end-to-end tests: a real SMTP server and real mailer processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..smtp import SmtpServer
from ..support import Service


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_mailer(start_dramatiq):
    """Start a real mailer sending to ``smtp``."""

    def start(smtp: SmtpServer, *, processes: int = 1, threads: int = 4, **env: str) -> Service:
        sender = {"MAIL_FROM_ADDRESS": "tickets@tripin.example", "MAIL_FROM_NAME": "Tripin Travel"}
        return start_dramatiq("mailer", processes=processes, threads=threads, **smtp.env(), **{**sender, **env})

    return start
