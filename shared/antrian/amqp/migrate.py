"""Move queues to the configured ``QUEUE_TYPE`` (and ``QUEUE_DELIVERY_LIMIT``), keeping every message.

RabbitMQ cannot change a queue's type or arguments in place: the queue must be deleted and declared again. So
each queue ``N`` whose arguments differ from those :func:`antrian.amqp.queue_types.declarations` gives is moved
through a holding queue ``N.migrating`` (durable, of the target type, no dead-lettering, no TTL):

1. drain ``N`` into ``N.migrating``;
2. delete ``N`` (only if empty) and declare it with the target arguments;
3. drain ``N.migrating`` back into ``N``, then delete ``N.migrating`` (only if empty).

(RabbitMQ 3.10 refuses ``queue.delete`` with ``if-empty`` on a quorum queue: emptiness is checked just before.)

Each drain runs on one channel in AMQP transaction mode: a batch of messages taken by a consumer (a prefetch of
500) is published, with each message's own properties (headers included: ``x-death``, Dramatiq's), and
acknowledged, then committed. A crash before the commit leaves the source as it was (RabbitMQ gives the
unacknowledged messages back), after it the batch is in the destination alone: no message is lost or doubled.
A run that stopped anywhere is finished by the next one: a queue whose ``N.migrating`` exists picks up where it
stopped. Messages keep their order; a dead-lettered message's 7-day TTL in ``.XQ`` starts again when it is moved
back.

Nothing may consume or publish meanwhile (a delayed message sits unacknowledged in a worker's memory, and a
publish to a queue being declared again would be dropped): queues that have consumers are refused
(:class:`QueuesInUse`) before anything is changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from antrian.amqp.queue_types import CLASSIC, QUORUM, declarations
from antrian.errors import Conflict

#: Suffix of the holding queue of a queue being moved.
HOLDING_SUFFIX = ".migrating"
#: Messages moved per transaction.
BATCH = 500
#: Seconds without a message after which a drain ends short of the count it started with.
IDLE_S = 5.0
#: The state of a queue that does not exist.
MISSING = "missing"

#: ``progress(moved)``: called after each committed batch with the number of messages it moved.
Progress = Callable[[int], None]


class QueuesInUse(Conflict):
    """Raised when a queue that must move has consumers (workers, sync-api): checked for all before any moves, and
    again for each just before it moves."""

    def __init__(self, in_use: dict[str, int], *, before_any: bool = True) -> None:
        listed = ", ".join(f"{name} ({count})" for name, count in in_use.items())
        changed = "nothing was changed" if before_any else "the queues before it were moved, no message is lost"
        super().__init__(
            f"queues have consumers: {listed}; stop sync-api and every worker first, then run it again ({changed})"
        )
        self.in_use = in_use


class NotDrained(Conflict):
    """Raised when a queue just drained holds messages again: something published to it meanwhile. Nothing was
    lost; once that is stopped, running the migration again finishes it."""

    def __init__(self, name: str, messages: int) -> None:
        super().__init__(
            f"{name} received {messages} messages while it was being moved: stop sync-api, every worker and "
            "scheduler first, then run it again to finish (no message was lost)"
        )
        self.name = name


@dataclass(frozen=True)
class QueueState:
    """What one queue (a queue, its ``.DQ`` or its ``.XQ``) is, beside what it should be."""

    name: str
    arguments: dict[str, Any]
    #: ``classic``, ``quorum``, ``missing``, or ``other arguments (…)`` (RabbitMQ's reason).
    current: str
    #: The target type, ``quorum`` or ``classic``.
    target: str
    #: Declared with exactly the target arguments.
    matches: bool
    messages: int
    consumers: int
    #: Messages in ``N.migrating`` (an earlier run stopped midway), None when it does not exist.
    holding: int | None

    @property
    def must_move(self) -> bool:
        return not self.matches or self.holding is not None

    @property
    def to_move(self) -> int:
        return self.messages * (not self.matches) + (self.holding or 0)


@dataclass(frozen=True)
class Moved:
    """What :func:`migrate` did to one queue."""

    state: QueueState
    #: Messages moved into the queue of the target type.
    moved: int
    created: bool


def holding_name(name: str) -> str:
    return name + HOLDING_SUFFIX


def inspect(connection: pika.BlockingConnection, queue_names: Iterable[str], *, queue_type: str,
            delivery_limit: int) -> list[QueueState]:
    """The state of each queue's three declarations; declares nothing that does not exist."""
    states = []
    for queue_name in queue_names:
        for name, arguments in declarations(queue_name, queue_type=queue_type, delivery_limit=delivery_limit):
            counts = _passive(connection, name)
            holding = _passive(connection, holding_name(name))
            if counts is None:
                current, matches, counts = MISSING, False, (0, 0)
            else:
                reason = _refused(connection, name, arguments)
                matches = reason is None
                current = queue_type if matches else _current(connection, queue_name, name, queue_type,
                                                              delivery_limit, reason or "")
            states.append(QueueState(name=name, arguments=arguments, current=current, target=queue_type,
                                     matches=matches, messages=counts[0], consumers=counts[1],
                                     holding=None if holding is None else holding[0]))
    return states


def migrate(connection: pika.BlockingConnection, states: list[QueueState], *,
            progress: Callable[[QueueState], Progress] | None = None) -> Iterable[Moved]:
    """Move each queue of ``states`` (from :func:`inspect`) that must, yielding what was done to each queue in
    turn. :class:`QueuesInUse`, before anything changes, when one that must move has consumers."""
    in_use = {state.name: state.consumers for state in states if state.must_move and state.consumers}
    if in_use:
        raise QueuesInUse(in_use)
    for state in states:
        if not state.must_move:
            yield Moved(state, 0, created=False)
            continue
        if state.current == MISSING and state.holding is None:
            _declare(connection, state.name, state.arguments)
            yield Moved(state, 0, created=True)
            continue
        yield Moved(state, _move(connection, state, progress(state) if progress else _ignore), created=False)


def _move(connection: pika.BlockingConnection, state: QueueState, progress: Progress) -> int:
    """Move one queue through its holding queue, from wherever an earlier run stopped; messages moved."""
    holding = holding_name(state.name)
    consumers = (_passive(connection, state.name) or (0, 0))[1]
    if consumers:  # started since the check before any move
        raise QueuesInUse({state.name: consumers}, before_any=False)
    if state.holding is None:
        _declare(connection, holding, {"x-queue-type": state.target})
    if state.current != MISSING and not state.matches:
        _drain(connection, state.name, holding, progress)
        _delete_empty(connection, state.name, classic=state.current == CLASSIC)
    _declare(connection, state.name, state.arguments)
    moved = _drain(connection, holding, state.name, progress)
    _delete_empty(connection, holding, classic=state.target == CLASSIC and state.holding is None)
    return moved


def _drain(connection: pika.BlockingConnection, source: str, destination: str, progress: Progress) -> int:
    """Move the messages ``source`` holds now to ``destination``, a committed transaction per batch; how many.

    A consumer with a prefetch of a batch (a ``basic_get`` per message is a round trip: 3x slower on quorum queues);
    what it was given beyond the last commit goes back to ``source`` when the channel closes."""
    channel = connection.channel()
    try:
        left = channel.queue_declare(source, passive=True).method.message_count
        if not left:
            return 0
        channel.basic_qos(prefetch_count=BATCH)
        channel.tx_select()
        moved = batch = last = 0
        for method, properties, body in channel.consume(source, inactivity_timeout=IDLE_S):
            if method is not None:
                channel.basic_publish("", destination, body, properties)
                last, batch = method.delivery_tag, batch + 1
            if batch and (method is None or batch == BATCH or moved + batch == left):
                channel.basic_ack(last, multiple=True)
                channel.tx_commit()
                progress(batch)
                moved, batch = moved + batch, 0
            if method is None or moved == left:  # idle: fewer than counted (an .XQ message expired meanwhile)
                return moved
        return moved
    finally:
        if channel.is_open:
            channel.close()


def _delete_empty(connection: pika.BlockingConnection, name: str, *, classic: bool) -> None:
    """Delete a queue we drained, only if it is empty and unused. RabbitMQ 3.10 refuses ``if-empty`` for quorum
    queues (NOT_IMPLEMENTED, closing the connection): it is checked just before, a passive declaration's counts
    being exact here since nothing consumes (checked) and the drain's channel is closed (nothing unacknowledged)."""
    counts = _passive(connection, name)
    if counts is None:
        return
    if counts != (0, 0):
        raise QueuesInUse({name: counts[1]}) if counts[1] else NotDrained(name, counts[0])
    channel = connection.channel()
    channel.queue_delete(name, if_empty=classic)
    channel.close()


def _declare(connection: pika.BlockingConnection, name: str, arguments: dict[str, Any]) -> None:
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments=arguments)
    channel.close()


def _passive(connection: pika.BlockingConnection, name: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue, None when it does not exist (a fresh channel: 404 closes it)."""
    channel = connection.channel()
    try:
        declared = channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    channel.close()
    return declared.method.message_count, declared.method.consumer_count


def _refused(connection: pika.BlockingConnection, name: str, arguments: dict[str, Any]) -> str | None:
    """Declare an existing queue with ``arguments``: None when they are its own, else RabbitMQ's reason."""
    channel: BlockingChannel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 406:  # PRECONDITION_FAILED: inequivalent arg
            return str(exc.reply_text)
        raise
    channel.close()
    return None


def _current(connection: pika.BlockingConnection, queue_name: str, name: str, queue_type: str,
             delivery_limit: int, reason: str) -> str:
    """The type of a queue that refused the target arguments: the other type when it takes that type's."""
    other = CLASSIC if queue_type == QUORUM else QUORUM
    arguments = dict(declarations(queue_name, queue_type=other, delivery_limit=delivery_limit))[name]
    if _refused(connection, name, arguments) is None:
        return other
    found = re.search(r"inequivalent arg '([^']+)'.*?: (received .*)$", reason)
    return f"other arguments ({found.group(1)}: {found.group(2)})" if found else "other arguments"


def _ignore(moved: int) -> None:
    pass
