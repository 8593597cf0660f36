"""Dramatiq's RabbitMQ broker, except that a publish RabbitMQ blocks fails once, at once, instead of six times.

While a memory or disk alarm lasts, RabbitMQ stops reading from every connection that publishes. pika gives up
after the connection's ``blocked_connection_timeout`` (:data:`antrian.amqp.connection.BLOCKED_TIMEOUT_S`) with
``ConnectionBlockedTimeout``, which Dramatiq's ``enqueue`` takes for a lost connection: it reconnects and tries
again, up to six times, each attempt blocked again (the alarm is the node's, not the connection's) and each
leaving one more copy of the message unread in RabbitMQ's socket buffer, to be published when the alarm clears.
Here the first blocked timeout raises :class:`antrian.errors.BrokerBlocked`: a web request answers 503 within
seconds, and rolls its transaction back, instead of holding it for a minute or for ever.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from antrian.amqp.queue_types import TypedRabbitmqBroker
from antrian.errors import BrokerBlocked


class FailFastRabbitmqBroker(TypedRabbitmqBroker):
    """A :class:`~antrian.amqp.queue_types.TypedRabbitmqBroker` whose blocked publishes raise :class:`BrokerBlocked`.

    Parameters: those of TypedRabbitmqBroker. Give the URL a ``blocked_connection_timeout``
    (:func:`antrian.amqp.connection.with_timeouts`): without one a blocked publish waits for ever.
    """

    @property
    def channel(self) -> Any:
        """The current thread's channel, its ``basic_publish`` failing fast on a blocked connection."""
        return _FailFastChannel(self, super().channel)

    @channel.deleter
    def channel(self) -> None:
        RabbitmqBroker.channel.fdel(self)  # type: ignore[attr-defined]


class _FailFastChannel:
    """A pika channel whose ``basic_publish`` turns a blocked-connection timeout into :class:`BrokerBlocked`."""

    def __init__(self, broker: RabbitmqBroker, channel: Any) -> None:
        self._broker = broker
        self._channel = channel

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._channel.basic_publish(*args, **kwargs)
        except pika.exceptions.ConnectionBlockedTimeout as exc:
            # pika has closed it; forget it so that this thread's next send opens a fresh one.
            del self._broker.connection
            raise BrokerBlocked(
                "the message broker blocks publishing (a resource alarm); try again shortly"
            ) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)
