"""Paused queues (Horizon's ``horizon:pause``, per queue): the pause is a row in ``paused_queues``.

Pausing writes the row; every worker process reads the set every second or so (:mod:`antrian.runtime.pauses`) and
stops consuming that queue, giving back what it had prefetched; resuming deletes the row. Messages stay in
RabbitMQ meanwhile, and the row outlives every restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects.postgresql import insert

from antrian.access import audit
from antrian.access.audit import Actor
from antrian.db.models import PausedQueue
from antrian.errors import NotFound
from antrian.messages import QUEUES

logger = logging.getLogger(__name__)


class UnknownQueue(NotFound):
    """Raised when an operator names a queue antrian does not have."""

    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {queue!r} not found: one of {', '.join(QUEUES)}")
        self.queue = queue


@dataclass(frozen=True)
class Pause:
    """A queue's pause: since when, and who asked."""

    queue: str
    paused_at: datetime
    paused_by: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.queue, "paused": True, "paused_at": self.paused_at.isoformat(),
                "paused_by": self.paused_by}


def not_paused(queue: str) -> dict[str, Any]:
    """How a queue that runs is shown (the shape of :meth:`Pause.as_dict`)."""
    return {"name": queue, "paused": False, "paused_at": None, "paused_by": None}


def paused(connection: Connection) -> dict[str, Pause]:
    """Every paused queue's pause, by queue name."""
    rows = connection.execute(select(PausedQueue.queue_name, PausedQueue.paused_at, PausedQueue.paused_by))
    return {name: Pause(name, at, by) for name, at, by in rows}


def pause(engine: Engine, queue: str, *, by: Actor) -> Pause:
    """Pause ``queue`` (pausing a paused queue keeps its first pause); return the pause."""
    _check(queue)
    with engine.begin() as connection:
        inserted = connection.execute(
            insert(PausedQueue).values(queue_name=queue, paused_by=by.operator)
            .on_conflict_do_nothing(index_elements=[PausedQueue.queue_name])
            .returning(PausedQueue.queue_name)
        ).first()
        if inserted:
            audit.record(connection, by, "pause", f"queue:{queue}")
        current = paused(connection)[queue]
    if inserted:
        logger.info("queue %s paused by %s (%s): workers stop taking its messages", queue, by.operator, by.via)
    return current


def resume(engine: Engine, queue: str, *, by: Actor) -> bool:
    """Resume ``queue``; False when it was not paused."""
    _check(queue)
    with engine.begin() as connection:
        deleted = connection.execute(
            delete(PausedQueue).where(PausedQueue.queue_name == queue).returning(PausedQueue.queue_name)
        ).first()
        if deleted:
            audit.record(connection, by, "resume", f"queue:{queue}")
    if deleted:
        logger.info("queue %s resumed by %s (%s): workers take its messages again", queue, by.operator, by.via)
    return deleted is not None


def state(engine: Engine, queue: str) -> dict[str, Any]:
    """``queue``'s pause as :meth:`Pause.as_dict`, or :func:`not_paused`."""
    _check(queue)
    with engine.connect() as connection:
        current = paused(connection).get(queue)
    return current.as_dict() if current else not_paused(queue)


def _check(queue: str) -> None:
    if queue not in QUEUES:
        raise UnknownQueue(queue)
