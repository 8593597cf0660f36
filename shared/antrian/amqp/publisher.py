"""Publishing many messages fast without losing one: a batch goes out, then we wait for its confirms.

Dramatiq's broker waits for each message's confirm in turn (about 1,600 messages/s here); pipelining
the confirms of a whole batch on one channel is about ten times faster and just as safe.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pika
from pika.spec import Basic

from antrian.amqp.connection import connection_parameters
from antrian.errors import PublishError

#: Seconds to wait for a batch's confirms before giving up on the connection.
CONFIRM_TIMEOUT_S = 30.0


class ConfirmedPublisher:
    """Publishes batches of persistent messages to queues on the default exchange.

    ``publish_batch`` returns only when RabbitMQ has confirmed every message of the batch and
    raises :class:`PublishError` if any was nacked or unroutable (then the whole batch should be
    published again: consumers must be idempotent anyway). ``publish`` and ``wait_for_confirms``
    split the two, so that a caller can prepare its next batch while RabbitMQ works.

    Parameters:
      broker_url(str): the AMQP URL.
    """

    def __init__(self, broker_url: str) -> None:
        self._connection = pika.BlockingConnection(connection_parameters(broker_url))
        try:
            # pika's blocking channel waits for every confirm one by one; its underlying
            # asynchronous channel lets us publish a batch and collect the confirms together.
            self._channel = self._connection.channel()._impl
            self._channel.confirm_delivery(self._on_confirm)
            self._channel.add_on_return_callback(self._on_return)
            self._connection.process_data_events(0)
        except BaseException:
            self.close()
            raise
        self._last_tag = 0
        self._unconfirmed: set[int] = set()
        self._oldest = 1  # the oldest delivery tag that may still be unconfirmed
        self._refused = 0
        self._properties = pika.BasicProperties(delivery_mode=2)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = range(self._oldest, method.delivery_tag + 1) if method.multiple else (method.delivery_tag,)
        settled = [tag for tag in tags if tag in self._unconfirmed]
        if isinstance(method, Basic.Nack):
            self._refused += len(settled)
        self._unconfirmed.difference_update(settled)
        while self._oldest <= self._last_tag and self._oldest not in self._unconfirmed:
            self._oldest += 1

    def _on_return(self, _channel: Any, _method: Any, _properties: Any, _body: bytes) -> None:
        self._refused += 1

    def publish(self, queue_name: str, bodies: Iterable[bytes]) -> int:
        """Send every body to ``queue_name`` without waiting; return a mark for :meth:`wait_for_confirms`.

        Nothing is safe until :meth:`wait_for_confirms` returns: do other work in between.
        """
        for body in bodies:
            self._channel.basic_publish("", queue_name, body, self._properties, mandatory=True)
            self._last_tag += 1
            self._unconfirmed.add(self._last_tag)
        return self._last_tag

    def wait_for_confirms(self, mark: int | None = None) -> None:
        """Return once RabbitMQ confirmed everything published up to ``mark`` (default: all so far).

        Raises :class:`PublishError` if RabbitMQ refused any message since the last call.
        """
        mark = self._last_tag if mark is None else mark
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        while self._oldest <= mark:
            if not self._connection.is_open or time.monotonic() > deadline:
                raise PublishError("RabbitMQ did not confirm the batch")
            self._connection.process_data_events(time_limit=0.001)
        if self._refused:
            refused, self._refused = self._refused, 0
            raise PublishError(f"RabbitMQ refused {refused} messages")

    def publish_all(self, messages: Iterable[tuple[str, bytes]], *, declare: Callable[[str], object]) -> Counter[str]:
        """Publish ``(queue_name, body)`` pairs, declaring each queue first, and wait for every confirm.

        Returns how many went to each queue. ``declare`` is Dramatiq's ``broker.declare_queue`` (with
        ``ensure=True``), so that each queue exists with the arguments Dramatiq's workers expect.
        """
        published: Counter[str] = Counter()
        for queue_name, group in itertools.groupby(messages, key=lambda pair: pair[0]):
            if queue_name not in published:
                declare(queue_name)
            bodies = [body for _, body in group]
            self.publish(queue_name, bodies)
            published[queue_name] += len(bodies)
        self.wait_for_confirms()
        return published

    def publish_batch(self, queue_name: str, bodies: Iterable[bytes]) -> None:
        """Publish every body and wait for their confirms."""
        self.wait_for_confirms(self.publish(queue_name, bodies))

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()

    def __enter__(self) -> ConfirmedPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
