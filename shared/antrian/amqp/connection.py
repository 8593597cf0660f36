"""Plain pika connections to RabbitMQ that fail fast instead of hanging, and URLs safe to print."""

from __future__ import annotations

import pika

#: Seconds between AMQP heartbeats; an idle web process reconnects on its next send.
HEARTBEAT_S = 30
#: Seconds a publish through Dramatiq's broker waits while RabbitMQ blocks publishers (a memory or disk alarm)
#: before it fails (:mod:`antrian.amqp.broker`): a web request that enqueues answers 503 well within 5 s instead
#: of hanging, with its database transaction open, for as long as the alarm lasts.
BLOCKED_TIMEOUT_S = 2.0


def with_timeouts(broker_url: str, *, blocked_s: float | None = BLOCKED_TIMEOUT_S) -> str:
    """Add our heartbeat and (unless ``blocked_s`` is None) blocked-connection timeout to each URL (several,
    ``;``-separated, for a cluster) that sets none: the URL form is how Dramatiq's broker takes pika's
    connection parameters."""
    wanted = [("heartbeat", HEARTBEAT_S)] + ([("blocked_connection_timeout", blocked_s)] if blocked_s else [])
    urls = []
    for url in broker_url.split(";"):
        for name, value in wanted:
            if f"{name}=" not in url:
                url += ("&" if "?" in url else "?") + f"{name}={value}"
        urls.append(url)
    return ";".join(urls)


def nodes(broker_url: str) -> list[str]:
    """The URL of each node of ``broker_url`` (several, ``;``-separated, for a cluster), in order."""
    return [url.strip() for url in broker_url.split(";") if url.strip()]


def connection_parameters(broker_url: str, *, timeout_s: float = 5.0) -> list[pika.URLParameters]:
    """Parameters for a plain pika connection that fails fast instead of hanging: one per node, so that
    ``pika.BlockingConnection`` tries each node in turn and connects to the first that answers."""
    every = []
    for url in nodes(broker_url):
        parameters = pika.URLParameters(url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = timeout_s
        parameters.blocked_connection_timeout = timeout_s
        parameters.heartbeat = HEARTBEAT_S
        every.append(parameters)
    return every


def ping(broker_url: str) -> None:
    """Open and close one connection (to the first node that answers); raises pika's error when none does."""
    connection = pika.BlockingConnection(connection_parameters(broker_url, timeout_s=3.0))
    connection.close()


def redact(broker_url: str) -> str:
    """The URL without its password: ``amqp://host:port/vhost``, or ``amqp://host1:port1,host2:port2/vhost`` for
    several nodes."""
    every = [pika.URLParameters(url) for url in nodes(broker_url)]
    hosts = ",".join(f"{parameters.host}:{parameters.port}" for parameters in every)
    vhost = "" if every[0].virtual_host == "/" else every[0].virtual_host
    return f"amqp://{hosts}/{vhost}"
