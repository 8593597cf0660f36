"""Engines and sessions: one engine per process, created lazily, never shared across a fork."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a worker keeps retrying a statement while PostgreSQL restarts, in seconds.
RECONNECT_WINDOW_S = 30.0


def make_engine(
    database_url: str, *, pool_size: int = 5, max_overflow: int = 30, autocommit: bool = False
) -> Engine:
    """An engine for one process.

    By default its pool checks each connection before use, so a restarted database costs no
    request. With ``autocommit`` every statement is its own transaction (no BEGIN/COMMIT round
    trips) and there is no check: hot paths write in single statements inside
    :func:`retry_on_disconnect`, which survives the restart instead.
    """
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=not autocommit,
        pool_recycle=1800,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        connect_args={"connect_timeout": 5, "application_name": "antrian"},
    )


def redact(database_url: str) -> str:
    """The URL without its password, for log lines and error messages."""
    return make_url(database_url).render_as_string(hide_password=True)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def is_disconnect(exc: BaseException) -> bool:
    """True when ``exc`` means the database went away (restart, network), not a bad statement."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))


def retry_on_disconnect(work: Callable[[], T], *, window_s: float = RECONNECT_WINDOW_S) -> T:
    """Run ``work`` again while the database is unreachable, for up to ``window_s`` seconds.

    ``work`` must be one whole transaction, so that running it again is safe.
    """
    deadline = time.monotonic() + window_s
    delay = 0.2
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            logger.warning("database unreachable, retrying in %.1fs: %s", delay, exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
