"""Fixtures for the mailer's end-to-end tests: real mailer processes (the SMTP server is tests/conftest.py's)."""

from __future__ import annotations

import pytest

from tests.smtp import SmtpServer
from tests.support import Service


@pytest.fixture
def start_mailer(start_dramatiq):
    """Start a real mailer sending to ``smtp``."""

    def start(smtp: SmtpServer, *, processes: int = 1, threads: int = 4, **env: str) -> Service:
        sender = {"MAIL_FROM_ADDRESS": "tickets@tripin.example", "MAIL_FROM_NAME": "Tripin Travel"}
        return start_dramatiq("mailer", processes=processes, threads=threads, **smtp.env(), **{**sender, **env})

    return start
