"""Quorum queues for Dramatiq's RabbitMQ broker: the arguments of every queue antrian declares, by ``QUEUE_TYPE``.

Dramatiq declares three queues per queue name, all classic: the queue, its delay queue ``.DQ`` and its dead-letter
queue ``.XQ`` (a 7-day message TTL), and it cannot declare quorum queues (Bogdanp/dramatiq#546, #869, #871).
:class:`TypedRabbitmqBroker` overrides the two places it builds them (``_build_queue_arguments`` for the queue
and ``.DQ``, ``_declare_xq_queue``). With ``quorum``:

- each of the three is a quorum queue (``x-queue-type``): replicated by Raft on every node of a cluster;
- the queue and ``.DQ`` dead-letter to ``.XQ`` as before, with a delivery limit (``x-delivery-limit``): a message
  that kills its worker again and again is dead-lettered after that many deliveries, and ends as a failed job;
- dead-lettering is at-least-once (``x-dead-letter-strategy``, which RabbitMQ allows only with
  ``x-overflow: reject-publish``; no length limit is set, so nothing is ever rejected for it): a message is not
  lost between the queue and ``.XQ`` when a node fails meanwhile;
- ``.XQ`` keeps Dramatiq's 7-day TTL (quorum queues honour message TTLs since RabbitMQ 3.10).

Priorities are not used (quorum queues refuse ``x-max-priority``). A queue that exists with other arguments makes
RabbitMQ refuse the declaration (``PRECONDITION_FAILED``): :func:`check_declared` turns that into one line naming
the queue and ``antrian queues migrate``, which moves it to the configured type (:mod:`antrian.amqp.migrate`).
"""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker, dq_name, xq_name

from antrian.errors import ConfigError

QUORUM, CLASSIC = "quorum", "classic"
QUEUE_TYPES = (QUORUM, CLASSIC)
#: Deliveries after which a quorum queue dead-letters a message (``QUEUE_DELIVERY_LIMIT``'s default).
DELIVERY_LIMIT = 10


def queue_arguments(queue_name: str, *, queue_type: str, delivery_limit: int = DELIVERY_LIMIT) -> dict[str, Any]:
    """The arguments of a queue or its ``.DQ``: dead-lettered to the ``.XQ`` of ``queue_name``'s queue."""
    arguments: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}
    if queue_type == QUORUM:
        arguments.update({
            "x-queue-type": QUORUM,
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        })
    return arguments


def dead_letter_arguments(*, queue_type: str) -> dict[str, Any]:
    """The arguments of an ``.XQ``: Dramatiq's TTL (the same for every message: they expire head first)."""
    arguments: dict[str, Any] = {"x-message-ttl": DEAD_MESSAGE_TTL}
    if queue_type == QUORUM:
        arguments["x-queue-type"] = QUORUM
    return arguments


def declarations(queue_name: str, *, queue_type: str,
                 delivery_limit: int = DELIVERY_LIMIT) -> list[tuple[str, dict[str, Any]]]:
    """``(name, arguments)`` of the queue, its ``.DQ`` and its ``.XQ``, as :class:`TypedRabbitmqBroker` makes them."""
    main = queue_arguments(queue_name, queue_type=queue_type, delivery_limit=delivery_limit)
    return [(queue_name, main), (dq_name(queue_name), main),
            (xq_name(queue_name), dead_letter_arguments(queue_type=queue_type))]


class QueueTypeMismatch(ConfigError):
    """Raised when a queue exists with other arguments than ``QUEUE_TYPE`` (and ``QUEUE_DELIVERY_LIMIT``) ask for
    (RabbitMQ said ``PRECONDITION_FAILED``): ``antrian queues migrate`` moves it over, keeping its messages."""

    def __init__(self, queue: str, queue_type: str, delivery_limit: int, reason: str) -> None:
        limit = f", QUEUE_DELIVERY_LIMIT={delivery_limit}" if queue_type == QUORUM else ""
        asked = f"QUEUE_TYPE={queue_type}{limit}"
        super().__init__(
            f"queue {queue!r} exists with other arguments than {asked} asks for ({reason}); "
            f"run `antrian queues migrate` to move every queue to them, keeping its messages"
        )
        self.queue = queue


def check_declared(connection: pika.BlockingConnection, queue_names: list[str], *, queue_type: str,
                   delivery_limit: int = DELIVERY_LIMIT) -> None:
    """Declare each queue (with its ``.DQ`` and ``.XQ``) as this process will; :class:`QueueTypeMismatch` when
    one exists with other arguments. Declaring creates what is missing, as Dramatiq would on first use."""
    for queue_name in queue_names:
        for name, arguments in declarations(queue_name, queue_type=queue_type, delivery_limit=delivery_limit):
            channel = connection.channel()
            try:
                channel.queue_declare(name, durable=True, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 406:  # PRECONDITION_FAILED: inequivalent arg
                    reason = exc.reply_text.split(" - ", 1)[-1]
                    raise QueueTypeMismatch(name, queue_type, delivery_limit, reason) from None
                raise
            channel.close()


class TypedRabbitmqBroker(RabbitmqBroker):
    """A :class:`dramatiq.brokers.rabbitmq.RabbitmqBroker` whose queues are of ``queue_type``.

    Parameters:
      queue_type(str): ``quorum`` or ``classic``.
      delivery_limit(int): a quorum queue's ``x-delivery-limit``.
      Others: those of RabbitmqBroker, except ``max_priority`` (quorum queues have no priorities).
    """

    def __init__(self, *, queue_type: str = QUORUM, delivery_limit: int = DELIVERY_LIMIT, **kwargs: Any) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type must be one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}")
        if queue_type == QUORUM and kwargs.get("max_priority"):
            raise ValueError("quorum queues have no priorities: max_priority must be None")
        super().__init__(**kwargs)
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return queue_arguments(queue_name, queue_type=self.queue_type, delivery_limit=self.delivery_limit)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments=dead_letter_arguments(queue_type=self.queue_type)
        )
