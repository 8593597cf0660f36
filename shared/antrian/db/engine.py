"""Engines and sessions: one engine per process, created lazily, never shared across a fork."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypedDict, TypeVar

from psycopg import errors as pg_errors
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from antrian.config import (
    DEFAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    DEFAULT_DB_LOCK_TIMEOUT_MS,
    DEFAULT_DB_STATEMENT_TIMEOUT_MS,
    Settings,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a worker keeps retrying a statement while PostgreSQL restarts, in seconds.
RECONNECT_WINDOW_S = 30.0


class Timeouts(TypedDict):
    """PostgreSQL's timeouts as :func:`make_engine`'s keyword arguments, in milliseconds (0: off)."""

    statement_timeout_ms: int
    lock_timeout_ms: int
    idle_in_transaction_timeout_ms: int


def timeouts(settings: Settings) -> Timeouts:
    """The settings' timeouts (``DB_*_TIMEOUT_MS``): ``make_engine(url, **timeouts(settings))``."""
    return Timeouts(
        statement_timeout_ms=settings.db_statement_timeout_ms,
        lock_timeout_ms=settings.db_lock_timeout_ms,
        idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
    )


def engine_for(settings: Settings, *, pool_size: int = 5, max_overflow: int = 30, autocommit: bool = False) -> Engine:
    """:func:`make_engine` for the settings' database with the settings' timeouts: what every process uses."""
    return make_engine(settings.database_url, pool_size=pool_size, max_overflow=max_overflow, autocommit=autocommit,
                       **timeouts(settings))


def make_engine(
    database_url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 30,
    autocommit: bool = False,
    statement_timeout_ms: int = DEFAULT_DB_STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = DEFAULT_DB_LOCK_TIMEOUT_MS,
    idle_in_transaction_timeout_ms: int = DEFAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
) -> Engine:
    """An engine for one process.

    By default its pool checks each connection before use, so a restarted database costs no
    request. With ``autocommit`` every statement is its own transaction (no BEGIN/COMMIT round
    trips) and there is no check: hot paths write in single statements inside
    :func:`retry_on_disconnect`, which survives the restart instead.

    Every connection starts with PostgreSQL's ``statement_timeout``, ``lock_timeout`` and
    ``idle_in_transaction_session_timeout`` set to the given milliseconds (0: off), sent with the
    connection's startup packet (no extra round trip). A statement's ``SET LOCAL`` overrides them for
    its transaction. Processes call :func:`engine_for`, which passes the settings' values.
    """
    options = (
        f"-c statement_timeout={_milliseconds(statement_timeout_ms)}"
        f" -c lock_timeout={_milliseconds(lock_timeout_ms)}"
        f" -c idle_in_transaction_session_timeout={_milliseconds(idle_in_transaction_timeout_ms)}"
    )
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=not autocommit,
        pool_recycle=1800,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        connect_args={"connect_timeout": 5, "application_name": "antrian", "options": options},
    )


def _milliseconds(value: int) -> int:
    """A timeout as PostgreSQL takes it: a whole number of milliseconds, 0 for none."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a timeout must be a whole number of milliseconds, 0 or more: {value!r}")
    return value


def redact(database_url: str) -> str:
    """The URL without its password, for log lines and error messages."""
    return make_url(database_url).render_as_string(hide_password=True)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def is_disconnect(exc: BaseException) -> bool:
    """True when ``exc`` means the database went away (restart, network), not a bad statement.

    PostgreSQL's lock and statement timeouts (:func:`is_timeout`) are OperationalErrors too, so they count:
    running the whole transaction again a moment later is what they call for as well.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))


def is_lock_timeout(exc: BaseException) -> bool:
    """True when ``exc`` is a statement that waited ``lock_timeout`` for a lock (55P03 lock_not_available)."""
    return isinstance(exc, DBAPIError) and isinstance(exc.orig, pg_errors.LockNotAvailable)


def is_timeout(exc: BaseException) -> bool:
    """True when ``exc`` is PostgreSQL giving up on a statement: its lock wait (55P03) or its run time (57014).

    (57014 query_canceled is also what a cancelled statement raises, e.g. ``pg_cancel_backend``.)
    """
    return is_lock_timeout(exc) or (isinstance(exc, DBAPIError) and isinstance(exc.orig, pg_errors.QueryCanceled))


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
            what = "database busy (a lock or statement timeout)" if is_timeout(exc) else "database unreachable"
            logger.warning("%s, retrying in %.1fs: %s", what, delay, exc.orig)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
