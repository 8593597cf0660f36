"""HonourPauses: each worker process follows the paused queues in ``paused_queues`` (:mod:`antrian.jobs.pauses`).

A thread reads the set every :data:`POLL_INTERVAL_S` seconds; the process's consumers stop taking a paused queue's
messages (:class:`antrian.amqp.pausable.PausableRabbitmqBroker` asks :meth:`HonourPauses.is_paused`), and a message
of that queue already fetched but not started is given back to RabbitMQ unprocessed as a worker thread picks it
up. Messages that were running when the pause came finish. The set is read before the worker takes its first
message, so a pause outlives restarts; until that first read succeeds nothing is taken, and when a later read
fails the last one read stands.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, SkipMessage
from sqlalchemy import Engine

from antrian.amqp.pausable import give_back
from antrian.config import Settings
from antrian.db.engine import engine_for
from antrian.jobs import pauses

logger = logging.getLogger(__name__)

#: Seconds between two reads of the paused queues by a worker process: how soon a pause takes hold.
POLL_INTERVAL_S = 1.0


class HonourPauses(Middleware):
    """Keep this process's view of the paused queues fresh, and give back fetched messages of a paused queue.

    Parameters:
      settings(Settings): where the database is.
      poll_interval_s(float): seconds between two reads.
    """

    def __init__(self, settings: Settings, *, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.settings = settings
        self.poll_interval_s = poll_interval_s
        self._paused: frozenset[str] | None = None  # None until the first read: every queue waits
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_paused(self, queue_name: str) -> bool:
        """Whether ``queue_name``'s messages must not be taken now."""
        names = self._paused
        return names is None or q_name(queue_name) in names

    def refresh(self) -> bool:
        """Read the paused queues once; False (and the last set kept) when the database did not answer."""
        try:
            with self.engine().connect() as connection:
                names = frozenset(pauses.paused(connection))
        except Exception as exc:  # noqa: BLE001 - keep the last set; the next poll tries again
            logger.warning("could not read the paused queues, keeping the last ones read: %s", exc)
            return False
        if names != self._paused:
            logger.info("paused queues: %s", ", ".join(sorted(names)) or "none")
        self._paused = names
        return True

    def engine(self) -> Engine:
        """This process's one-connection engine, made on first use (after Dramatiq forked its processes)."""
        if self._engine is None:
            self._engine = engine_for(self.settings, pool_size=1, max_overflow=0)
        return self._engine

    # ------------------------------------------------------------------------------------------ the hooks

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.refresh()  # before any consumer starts: a paused queue stays paused across a restart
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="paused-queues", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if self.is_paused(message.queue_name):
            give_back(message)
            raise SkipMessage(f"queue {q_name(message.queue_name)} is paused: message given back unprocessed")

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.refresh()
