"""Plain pika connections to RabbitMQ that fail fast instead of hanging, and URLs safe to print."""

from __future__ import annotations

import pika

#: Seconds between AMQP heartbeats; an idle web process reconnects on its next send.
HEARTBEAT_S = 30


def with_heartbeat(broker_url: str) -> str:
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
