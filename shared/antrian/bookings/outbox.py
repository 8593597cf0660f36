"""The transactional outbox: a message is written in the transaction that needs it, then relayed.

The old system dispatched its email job after the commit: a crash between the two lost the email,
and a dispatch inside a transaction that later rolled back sent one for a booking that never was.
Here the message is a row of the same transaction, and a relay publishes it to RabbitMQ with
publisher confirms before deleting it. A relay that dies between the confirm and the delete
publishes the row again, so consumers must be idempotent (the mailer is).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import Connection, Engine, delete, func, insert, select

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.db.models import OutboxMessage
from antrian.messages import Contract

logger = logging.getLogger(__name__)

#: A trigger on ``outbox`` notifies this channel; PostgreSQL delivers it when the writing transaction commits.
CHANNEL = "antrian_outbox"
#: Rows published per transaction.
BATCH_SIZE = 500
#: Seconds a relay waits for a notification before it looks anyway (a missed NOTIFY costs this much).
IDLE_WAIT_S = 5.0
#: Seconds a woken relay lets further rows gather before it takes a batch: at 100 bookings a second one
#: transaction and one confirm carry several messages instead of one each (make profile: the relay spent a quarter
#: of sync-api's CPU relaying one row per batch, and as much again finding the next batch empty).
LINGER_S = 0.05
#: Seconds between attempts while RabbitMQ or PostgreSQL is away (doubling up to the second figure).
MIN_RETRY_S, MAX_RETRY_S = 0.5, 10.0


def add(connection: Connection, contract: Contract, *args: Any) -> None:
    """Write one message for ``contract`` in the caller's transaction; it leaves only if that commits."""
    connection.execute(insert(OutboxMessage).values(queue_name=contract.queue, body=contract.encode(*args)))


def backlog(connection: Connection) -> tuple[int, float]:
    """The number of messages waiting, and the age in seconds of the oldest (0 when none)."""
    count, oldest = connection.execute(
        select(func.count(), func.coalesce(func.extract("epoch", func.now() - func.min(OutboxMessage.created_at)), 0))
    ).one()
    return count, float(oldest)


class OutboxRelay:
    """Publishes outbox rows in batches with confirms, then deletes them, in one transaction per batch.

    Any number of relays may run (one per web process, on every host): each batch is claimed
    with ``FOR UPDATE SKIP LOCKED``, so two relays never publish the same row at the same time.

    Parameters:
      engine: the database.
      broker: Dramatiq's broker, used to declare each queue the way Dramatiq's workers expect it.
      broker_url: where to publish.
    """

    def __init__(self, engine: Engine, broker: RabbitmqBroker, broker_url: str, *, batch_size: int = BATCH_SIZE):
        self.engine = engine
        self.broker = broker
        self.broker_url = broker_url
        self.batch_size = batch_size
        self._publisher: ConfirmedPublisher | None = None
        self._on_published: Callable[[str, int], object] | None = None

    def on_published(self, callback: Callable[[str, int], object]) -> None:
        """Call ``callback(queue_name, count)`` after each confirmed batch (for metrics)."""
        self._on_published = callback

    def relay_once(self) -> int:
        """Publish and delete one batch; return how many messages it held (0 when the outbox is empty)."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(OutboxMessage.id, OutboxMessage.queue_name, OutboxMessage.body)
                .order_by(OutboxMessage.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            counts = self._connected().publish_all(
                ((row.queue_name, bytes(row.body)) for row in rows),
                declare=lambda queue_name: self.broker.declare_queue(queue_name, ensure=True),
            )
            connection.execute(delete(OutboxMessage).where(OutboxMessage.id.in_([row.id for row in rows])))
        if self._on_published is not None:
            for queue_name, count in counts.items():
                self._on_published(queue_name, count)
        return len(rows)

    def drain(self) -> int:
        """Relay until the outbox is empty (or only rows other relays hold are left)."""
        total = 0
        while count := self.relay_once():
            total += count
        return total

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set: woken by each commit's NOTIFY, and every IDLE_WAIT_S anyway.

        Outages of RabbitMQ or PostgreSQL are waited out with backoff; the rows wait in the table.
        """
        delay = MIN_RETRY_S
        listener: Connection | None = None
        while not stop.is_set():
            try:
                if listener is None:
                    listener = self._listen()
                # Batches until one is not full: the rows committed after it each bring a notification.
                while self.relay_once() == self.batch_size:
                    pass
                if delay > MIN_RETRY_S:
                    logger.info("outbox relay is publishing again")
                delay = MIN_RETRY_S
                # Wake on the next commit that wrote a row, or after IDLE_WAIT_S; then let more rows gather, and
                # take the notifications they brought meanwhile: the next batch carries them all.
                driver = listener.connection.driver_connection
                if driver is None:  # psycopg's connection is gone: an outage like any other (AttributeError, as before)
                    raise AttributeError("the listening connection has no psycopg connection any more")
                if any(True for _ in driver.notifies(timeout=IDLE_WAIT_S, stop_after=1)):
                    stop.wait(LINGER_S)
                    for _ in driver.notifies(timeout=0):
                        pass
            except Exception as exc:  # noqa: BLE001 - an outage must not end the relay
                if delay == MIN_RETRY_S:
                    logger.warning("outbox relay cannot publish, retrying: %s", exc)
                self._reset()
                _close_quietly(listener)
                listener = None
                stop.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)
        self._reset()
        _close_quietly(listener)

    def close(self) -> None:
        """Close the publishing connection (``run`` does it when stopped)."""
        self._reset()

    def _listen(self) -> Connection:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql(f"LISTEN {CHANNEL}")
        return connection

    def _connected(self) -> ConfirmedPublisher:
        if self._publisher is None:
            self._publisher = ConfirmedPublisher(self.broker_url)
        return self._publisher

    def _reset(self) -> None:
        """Forget the connections after an error; the next batch opens new ones."""
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
            self._publisher = None


def _close_quietly(connection: Connection | None) -> None:
    """Close the listening connection for good: back in the pool it would still be subscribed."""
    if connection is not None:
        try:
            connection.invalidate()
            connection.close()
        except Exception:  # noqa: BLE001
            pass
    return None

