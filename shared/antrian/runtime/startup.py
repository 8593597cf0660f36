"""Start-up checks: a process that cannot run says why in one line and exits, no traceback wall."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pika
import pika.exceptions

from antrian.amqp import connection as amqp
from antrian.amqp import queue_types
from antrian.config import Settings, load_settings
from antrian.db import engine as db
from antrian.errors import ConfigError, DependencyUnavailable
from antrian.messages import QUEUES

T = TypeVar("T")

#: Exit codes of antrian's processes.
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def fail(program: str, message: str, code: int) -> NoReturn:
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def check_database(settings: Settings) -> None:
    engine = db.engine_for(settings, pool_size=1, max_overflow=0)
    try:
        db.ping(engine)
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable" here
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DependencyUnavailable(
            f"cannot reach the database at {db.redact(settings.database_url)}: {reason}"
        ) from None
    finally:
        engine.dispose()


def check_broker(settings: Settings) -> None:
    """Reach a node of the broker (any of ``BROKER_URL``'s, in turn)."""
    try:
        amqp.ping(settings.broker_url)
    except Exception as exc:  # noqa: BLE001
        reason = str(exc) or type(exc).__name__
        raise DependencyUnavailable(
            f"cannot reach the broker at {amqp.redact(settings.broker_url)}: {reason}"
        ) from None


def check_queues(settings: Settings) -> None:
    """Declare SPEC's queues as ``QUEUE_TYPE`` says: one that exists with other arguments is a
    :class:`~antrian.amqp.queue_types.QueueTypeMismatch` (a configuration error: one line, then exit)."""
    try:
        connection = pika.BlockingConnection(amqp.connection_parameters(settings.broker_url, timeout_s=3.0))
        try:
            queue_types.check_declared(connection, list(QUEUES), queue_type=settings.queue_type,
                                       delivery_limit=settings.queue_delivery_limit)
        finally:
            if connection.is_open:
                connection.close()
    except pika.exceptions.AMQPError as exc:
        raise DependencyUnavailable(
            f"cannot declare the queues at {amqp.redact(settings.broker_url)}: {exc!r}"
        ) from None


def settings_or_exit(program: str, *, require: tuple[str, ...] = (), database: bool = True,
                     broker: bool = True) -> Settings:
    """Load settings and check what this process needs, or exit with one clear line."""
    return guarded(program, lambda: _load_and_check(require, database, broker))


def guarded(program: str, work: Callable[[], T]) -> T:
    """Run ``work``, turning antrian's configuration and dependency errors into one line and an exit."""
    try:
        return work()
    except ConfigError as exc:
        fail(program, str(exc), EXIT_CONFIG)
    except DependencyUnavailable as exc:
        fail(program, str(exc), EXIT_UNAVAILABLE)


def _load_and_check(require: tuple[str, ...], database: bool, broker: bool) -> Settings:
    settings = load_settings()
    for name in require:
        settings.require(name)
    if database:
        check_database(settings)
    if broker:
        check_broker(settings)
        check_queues(settings)
    return settings
