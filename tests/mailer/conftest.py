"""Fixtures for the mailer's end-to-end tests: a real SMTP server and real mailer processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..smtp import SmtpServer
from ..support import BIN, Service, base_env, free_port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_mailer(services, tmp_path):
    """Start a real mailer (Dramatiq processes) sending to ``smtp``; returns the Service (``.metrics_url``)."""

    def start(smtp: SmtpServer, *, processes: int = 1, threads: int = 4, **env: str) -> Service:
        port = free_port()
        service = Service(
            f"mailer-{port}",
            [str(BIN / "mailer"), "--processes", str(processes), "--threads", str(threads)],
            base_env(**smtp.env(), METRICS_PORT=str(port), MAIL_FROM_ADDRESS="tickets@tripin.example",
                     MAIL_FROM_NAME="Tripin Travel", **env),
            tmp_path,
            ready_url=f"http://127.0.0.1:{port}/metrics",
        )
        service.metrics_url = f"http://127.0.0.1:{port}/metrics"
        services.append(service.start(timeout=60))
        return service

    return start
