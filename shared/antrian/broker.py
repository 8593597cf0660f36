"""Dramatiq's RabbitmqBroker, set up once per process with publisher confirms."""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware

from . import heartbeat
from .config import Settings

#: Seconds between AMQP heartbeats; an idle web process reconnects on its next send.
HEARTBEAT_S = 30


class Heartbeat(Middleware):
    """Each worker process beats for the Kubernetes probes while its threads live (see :mod:`antrian.heartbeat`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._beating: heartbeat.Beating | None = None

    def after_worker_boot(self, broker, worker):
        self._beating = heartbeat.Beating(self.path, worker)
        self._beating.start()

    def before_worker_shutdown(self, broker, worker):
        if self._beating is not None:
            self._beating.stopped.set()


def make_broker(settings: Settings, *, extra_middleware: list[Middleware] | None = None) -> RabbitmqBroker:
    """Build the broker every antrian process uses and make it Dramatiq's global broker.

    Publisher confirms are on: ``send`` returns only once RabbitMQ has the message. A message that
    runs out of attempts is kept in ``failed_jobs`` (see :mod:`antrian.keep_failed`).
    """
    from .keep_failed import KeepFailedJobs

    middleware = [factory() for factory in default_middleware]
    # First, so that its after-hooks run last: after Retries has given up, after TimeLimit stopped its timer.
    middleware.insert(0, KeepFailedJobs(settings.database_url, settings.broker_url))
    middleware.append(CurrentMessage())
    if os.environ.get(heartbeat.ENV):  # a worker started by antrian.workers.exec_worker
        middleware.append(Heartbeat(Path(os.environ[heartbeat.ENV])))
    middleware.extend(extra_middleware or [])
    broker = RabbitmqBroker(url=_with_heartbeat(settings.broker_url), confirm_delivery=True, middleware=middleware)
    dramatiq.set_broker(broker)
    return broker


def _with_heartbeat(broker_url: str) -> str:
    """Add our heartbeat to each URL (several, ``;``-separated, for a cluster) that sets none."""
    urls = []
    for url in broker_url.split(";"):
        if "heartbeat=" not in url:
            url += ("&" if "?" in url else "?") + f"heartbeat={HEARTBEAT_S}"
        urls.append(url)
    return ";".join(urls)


def connection_parameters(broker_url: str, *, timeout_s: float = 5.0) -> pika.URLParameters:
    """Parameters for a plain pika connection that fails fast instead of hanging."""
    parameters = pika.URLParameters(broker_url.split(";")[0])
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout_s
    parameters.blocked_connection_timeout = timeout_s
    parameters.heartbeat = HEARTBEAT_S
    return parameters


def ping(broker_url: str) -> None:
    """Open and close one connection; raises pika's error when RabbitMQ cannot be reached."""
    connection = pika.BlockingConnection(connection_parameters(broker_url, timeout_s=3.0))
    connection.close()


def redact(broker_url: str) -> str:
    """The URL without its password."""
    parameters = pika.URLParameters(broker_url.split(";")[0])
    vhost = "" if parameters.virtual_host == "/" else parameters.virtual_host
    return f"amqp://{parameters.host}:{parameters.port}/{vhost}"
