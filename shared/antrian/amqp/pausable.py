"""Dramatiq's RabbitMQ broker, with consumers that stop taking a paused queue's messages.

Dramatiq can pause a whole worker process (``Worker.pause``), not one queue, and its paused consumer closes its
connection, which fails the acknowledgements of the messages still running. Here a consumer whose queue is
paused cancels its AMQP consumer instead (pika gives back what it had buffered, requeued) and keeps its
connection: heartbeats and the acknowledgements of running messages flow on. Messages it had already handed to
Dramatiq's work queue are given back by :mod:`antrian.runtime.pauses` as they come up: their acknowledgement
becomes a requeue (:func:`give_back`). On resume it consumes again. Delay queues (``.DQ``) never pause: due
messages move onto their paused queue and wait there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pika.exceptions
from dramatiq import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed

from antrian.amqp.queue_types import TypedRabbitmqBroker

logger = logging.getLogger(__name__)

_GIVEN_BACK = "_antrian_given_back"
_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)


def never(queue_name: str) -> bool:
    """No queue is ever paused (the default)."""
    return False


def give_back(message: MessageProxy) -> None:
    """Have this message's acknowledgement put it back on its queue, unprocessed, instead of removing it."""
    setattr(message, _GIVEN_BACK, True)


class PausableRabbitmqBroker(TypedRabbitmqBroker):
    """A :class:`~antrian.amqp.queue_types.TypedRabbitmqBroker` whose consumers honour ``is_paused``.

    Parameters:
      is_paused(Callable[[str], bool]): whether a queue (its canonical name) is paused now; called by every
        consumer about once per ``worker_timeout`` while its queue is quiet or paused, and before each message
        otherwise, so it must be cheap (a lookup in a set refreshed elsewhere).
      Others: those of TypedRabbitmqBroker.
    """

    def __init__(self, *, is_paused: Callable[[str], bool] = never, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.is_paused = is_paused

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _PausableConsumer


class _PausableConsumer(_RabbitmqConsumer):
    """Consumes as Dramatiq's does while its queue runs; while it is paused, consumes nothing and idles."""

    def __init__(self, broker: PausableRabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.idle_s = timeout / 1000
        self.pausable = q_name(queue_name) == queue_name  # not a delay queue
        self.consuming = True

    def __next__(self) -> Any:
        if self.pausable and self.broker.is_paused(self.queue_name):
            try:
                if self.consuming:
                    self.channel.cancel()  # basic.cancel; what pika had buffered is rejected with requeue
                    self.consuming = False
                    logger.info("queue %s is paused: its consumer stopped", self.queue_name)
                self.connection.sleep(self.idle_s)  # heartbeats, and the acks of messages still running
            except _AMQP_ERRORS as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            return None
        if not self.consuming:
            try:
                self.iterator = self.channel.consume(self.queue_name, inactivity_timeout=self.idle_s)
            except _AMQP_ERRORS as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            self.consuming = True
            logger.info("queue %s is resumed: its consumer started again", self.queue_name)
        return super().__next__()  # type: ignore[no-untyped-call]

    def ack(self, message: MessageProxy) -> None:
        if not getattr(message, _GIVEN_BACK, False):
            super().ack(message)  # type: ignore[no-untyped-call]
            return
        try:
            self.known_tags.remove(message._tag)
            self.connection.add_callback_threadsafe(partial(self.channel.basic_nack, message._tag, requeue=True))
        except _AMQP_ERRORS as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        except KeyError:
            logger.warning("could not give message %s back: not in known tags", message.message_id)
