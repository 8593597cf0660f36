"""MeasureWait: how long each message waited before a worker took it, in every worker process.

The wait runs from the message's enqueue (``message_timestamp``, set by whoever made it: for an invoice, the
outbox row written with the booking) or, for a delayed or retried message, from its due time, to the moment
its processing starts. Dramatiq drops a delayed message's ``eta`` when it puts it back on its queue once due,
so this middleware copies the eta into :data:`DUE_OPTION` as the message is delayed; the wait starts at the
latest of the three times. Clocks of different hosts may disagree: a negative wait counts as 0.

Each wait is observed in ``antrian_message_wait_seconds{queue,actor}`` (Prometheus multiprocess mode) and
counted in memory by minute and bucket; a thread writes those counts to ``message_wait_counts`` every
:data:`FLUSH_INTERVAL_S` seconds (:mod:`antrian.jobs.waits`), where ``/api/queues`` and ``antrian queues``
read p50 and p95 from, whatever process they run in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.common import current_millis, q_name
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from antrian.config import Settings
from antrian.db.engine import engine_for
from antrian.jobs import waits

logger = logging.getLogger(__name__)

#: The option that keeps a delayed message's due time (ms) once Dramatiq has removed its ``eta``.
DUE_OPTION = "antrian_due_ms"
#: Seconds between two writes of a process's counts.
FLUSH_INTERVAL_S = 5.0
#: Seconds between two prunes of old counts by a process.
PRUNE_INTERVAL_S = 3600.0
#: Minutes of counts a process keeps in memory while PostgreSQL is away (older ones are dropped).
MAX_UNWRITTEN_MINUTES = 60

Key = tuple[int, str, float]  # (minute since the epoch, queue, le)


def waited_ms(message: dramatiq.Message[Any] | dramatiq.MessageProxy, now_ms: int) -> int:
    """Milliseconds ``message`` has waited at ``now_ms``: since the latest of its enqueue and due times."""
    start = message.message_timestamp
    for option in ("eta", DUE_OPTION):
        value = message.options.get(option)
        if isinstance(value, int | float) and not isinstance(value, bool):
            start = max(start, int(value))
    return max(0, now_ms - start)


class MeasureWait(Middleware):
    """Observe every message's wait as it starts, and keep per-minute counts in ``message_wait_counts``.

    Parameters:
      settings(Settings): where the database is.
      flush_interval_s(float): seconds between two writes of the counts.
    """

    def __init__(self, settings: Settings, *, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.settings = settings
        self.flush_interval_s = flush_interval_s
        self._pending: Counter[Key] = Counter()
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at = 0.0

    # ------------------------------------------------------------------------------------------ the hooks

    def before_delay_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        eta = message.options.get("eta")
        if isinstance(eta, int | float) and not isinstance(eta, bool):
            message.options[DUE_OPTION] = int(eta)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        now_ms = current_millis()
        self.observe(q_name(message.queue_name), message.actor_name, waited_ms(message, now_ms) / 1000, now_ms=now_ms)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wait-time-flusher", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_interval_s + 5)
        self.flush()  # what the last messages added

    # ------------------------------------------------------------------------------------------ the counts

    def observe(self, queue: str, actor: str, seconds: float, *, now_ms: int) -> None:
        """One message of ``queue`` started after waiting ``seconds``."""
        from antrian.jobs.metrics import MESSAGE_WAIT  # prometheus_client only once the worker set up its metrics

        MESSAGE_WAIT.labels(queue, actor).observe(seconds)
        key = (now_ms // 60_000, queue, waits.upper_bound(seconds))
        with self._lock:
            self._pending[key] += 1

    def pending(self) -> Mapping[Key, int]:
        """The counts not written yet (a copy)."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> int:
        """Write the counts gathered since the last flush; return how many rows were upserted. On a database
        error they stay for the next flush (the last :data:`MAX_UNWRITTEN_MINUTES` minutes of them)."""
        with self._lock:
            taken, self._pending = self._pending, Counter()
        if not taken:
            return 0
        rows = {(datetime.fromtimestamp(minute * 60, UTC), queue, le): count
                for (minute, queue, le), count in taken.items()}
        try:
            with self.engine().begin() as connection:
                waits.add(connection, rows)
                if time.monotonic() - self._pruned_at > PRUNE_INTERVAL_S:
                    waits.prune(connection)
                    self._pruned_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the counts wait for the next flush; the metric has them already
            logger.warning("could not write %d wait count(s), trying again in %.0f s: %s", len(rows),
                           self.flush_interval_s, exc)
            oldest = max(minute for minute, _queue, _le in taken) - MAX_UNWRITTEN_MINUTES
            with self._lock:
                for key, count in taken.items():
                    if key[0] > oldest:
                        self._pending[key] += count
            return 0
        return len(rows)

    def engine(self) -> Engine:
        """This process's one-connection engine, made on first use (after Dramatiq forked its processes)."""
        if self._engine is None:
            self._engine = engine_for(self.settings, pool_size=1, max_overflow=0)
        return self._engine

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()
