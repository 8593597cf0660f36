"""The failed-job store: messages that ran out of attempts, kept in PostgreSQL until retried or flushed.

Laravel's ``failed_jobs``, for Dramatiq: :class:`antrian.jobs.keep_failed.KeepFailedJobs` writes a row
instead of leaving the message in RabbitMQ's dead-letter queue, where nobody can list or replay it.
A retry publishes the message again with publisher confirms and deletes its row in the same
transaction, after the confirm: a retry interrupted anywhere leaves the job stored, queued, or (for
the one unconfirmed batch) both, and the worker that runs a retried job deletes any row left behind.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import dramatiq.errors
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from pika.exceptions import AMQPError
from sqlalchemy import Connection, Engine, Text, cast, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from antrian.access import audit
from antrian.access.audit import Actor
from antrian.amqp.publisher import ConfirmedPublisher
from antrian.db.models import FailedJob, FailedJobAction
from antrian.errors import DependencyUnavailable, InvalidInput, NotFound, PublishError

#: The option a retried message carries: the id of the failed job it came from.
RETRIED_FROM = "failed_job_id"
#: Dramatiq's bookkeeping of one life of a message: not kept, and not carried into a retry.
_ATTEMPT_OPTIONS = frozenset({"retries", "traceback", "requeue_timestamp", "eta", RETRIED_FROM})
#: Rows as plain tuples with attributes, read through a Core connection.
_TABLE = FailedJob.__table__
#: Failed jobs a retry-all publishes per transaction (and per wait for RabbitMQ's confirms).
RETRY_BATCH = 500
#: Characters of a traceback kept.
TRACEBACK_LENGTH = 20_000


class RetryInterrupted(DependencyUnavailable):
    """Raised when RabbitMQ went away during a retry: ``retried`` jobs were requeued, the rest are still stored."""

    def __init__(self, retried: int, cause: BaseException) -> None:
        reason = str(cause) or type(cause).__name__
        super().__init__(f"RabbitMQ stopped confirming after {retried} retried jobs ({reason}); "
                         "the others are still stored: retry them again")
        self.retried = retried

    def details(self) -> dict[str, Any]:
        return {"retried": self.retried}


class FailedJobNotFound(NotFound):
    """Raised when an operator names a failed job that is not stored (never was, retried or flushed)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"failed job {job_id} not found")
        self.job_id = job_id


@dataclass(frozen=True)
class Failure:
    """Why and when a message was given up: its last exception and how many attempts it had."""

    exception: str
    traceback: str
    attempts: int
    worker: str


def keep(connection: Connection, message: dramatiq.Message[Any] | dramatiq.MessageProxy, failure: Failure) -> int:
    """Store ``message`` as failed and return its row's id; the same message failing again updates its row."""
    values = {
        "message_id": message.message_id,
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": _storable(list(message.args)),
        "kwargs": _storable(dict(message.kwargs)),
        "options": _storable({key: value for key, value in message.options.items() if key not in _ATTEMPT_OPTIONS}),
        "attempts": failure.attempts,
        "exception": _text(failure.exception),
        "traceback": _text(failure.traceback[-TRACEBACK_LENGTH:]),
        "worker": failure.worker,
        "enqueued_at": _from_ms(message.message_timestamp),
    }
    statement = insert(FailedJob).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[FailedJob.message_id],
        set_={**{key: statement.excluded[key] for key in values if key != "message_id"}, "failed_at": func.now()},
    )
    return connection.execute(statement.returning(FailedJob.id)).scalar_one()


def stored_id(connection: Connection, message_id: str) -> int | None:
    """The row id of a message stored as failed, or None."""
    return connection.execute(select(FailedJob.id).where(FailedJob.message_id == message_id)).scalar_one_or_none()


def forget(connection: Connection, message_id: str) -> int:
    """Delete the row of a message that is running again (retried or redelivered); return how many went."""
    return connection.execute(delete(FailedJob).where(FailedJob.message_id == message_id)).rowcount


def list_failed(engine: Engine, *, queue: str | None = None, search: str | None = None, limit: int = 100,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The failed jobs, newest first, and how many there are (of ``queue`` when given).

    ``search`` keeps those whose arguments (as JSON text) or exception contain it, ignoring case
    (``%`` and ``_`` in it are plain characters).
    """
    where: list[Any] = [] if queue is None else [FailedJob.queue_name == queue]
    if search:
        pattern = f"%{like_escape(_text(search))}%"
        where.append(or_(
            cast(FailedJob.args, Text).ilike(pattern, escape="\\"),
            cast(FailedJob.kwargs, Text).ilike(pattern, escape="\\"),
            FailedJob.exception.ilike(pattern, escape="\\"),
        ))
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(FailedJob).where(*where)).scalar_one()
        rows = connection.execute(
            select(_TABLE).where(*where).order_by(FailedJob.id.desc()).limit(limit).offset(offset)
        ).all()
    return [present(row) for row in rows], total


def get(engine: Engine, job_id: int) -> dict[str, Any]:
    """One failed job; raises :class:`FailedJobNotFound`."""
    with engine.connect() as connection:
        row = connection.execute(select(_TABLE).where(FailedJob.id == job_id)).one_or_none()
    if row is None:
        raise FailedJobNotFound(job_id)
    return present(row)


def counts(connection: Connection) -> list[tuple[str, str, int]]:
    """``(queue, actor, failed jobs stored)`` for every queue and actor that has any."""
    rows = connection.execute(
        select(FailedJob.queue_name, FailedJob.actor_name, func.count())
        .group_by(FailedJob.queue_name, FailedJob.actor_name)
        .order_by(FailedJob.queue_name, FailedJob.actor_name)
    ).all()
    return [(queue, actor, jobs) for queue, actor, jobs in rows]


def retry(engine: Engine, broker: RabbitmqBroker, broker_url: str, *, job_id: int | None = None,
          queue: str | None = None, by: Actor, batch_size: int = RETRY_BATCH) -> int:
    """Put failed jobs back on their queues with a fresh attempt count; return how many.

    ``job_id`` retries that one job (raises :class:`FailedJobNotFound`); otherwise every stored
    job is retried, or only ``queue``'s. Each batch is published, confirmed by RabbitMQ, then
    deleted in one transaction. RabbitMQ going away in the middle raises :class:`RetryInterrupted`
    and leaves the unconfirmed batch and the rest stored.
    """
    with engine.connect() as connection:
        # Only what is stored now: a job that fails again while this runs is not retried again by it.
        newest = connection.execute(select(func.max(FailedJob.id))).scalar_one()
        exists = job_id is None or connection.execute(select(FailedJob.id).where(FailedJob.id == job_id)).first()
    if job_id is not None and not exists:  # ``exists`` is True when no job_id was given
        raise FailedJobNotFound(job_id)
    if newest is None:
        return 0
    retried = 0
    try:
        with ConfirmedPublisher(broker_url) as publisher:
            while batch := _retry_batch(engine, broker, publisher, job_id=job_id, queue=queue, by=by,
                                        limit=batch_size, newest=newest):
                retried += batch
                if job_id is not None:
                    break
    except (PublishError, AMQPError, dramatiq.errors.BrokerError) as exc:
        raise RetryInterrupted(retried, exc) from exc
    if job_id is not None and not retried:
        raise FailedJobNotFound(job_id)
    return retried


def _retry_batch(engine: Engine, broker: RabbitmqBroker, publisher: ConfirmedPublisher, *,
                 job_id: int | None, queue: str | None, by: Actor, limit: int, newest: int) -> int:
    """Publish one batch of failed jobs, wait for the confirms, delete their rows; return how many."""
    with engine.begin() as connection:
        query = select(_TABLE).where(FailedJob.id <= newest).order_by(FailedJob.id).limit(limit)
        if job_id is not None:
            # A concurrent retry of the same job waits here, then finds it gone.
            query = query.where(FailedJob.id == job_id).with_for_update()
        else:
            query = query.with_for_update(skip_locked=True)
            if queue is not None:
                query = query.where(FailedJob.queue_name == queue)
        rows = connection.execute(query).all()
        if rows:
            publisher.publish_all(
                ((row.queue_name, _retry_body(row)) for row in rows),
                declare=lambda name: broker.declare_queue(name, ensure=True),
            )
            connection.execute(delete(FailedJob).where(FailedJob.id.in_([row.id for row in rows])))
            _record(connection, "retry", Counter(row.queue_name for row in rows), by, _target(job_id, queue))
    return len(rows)


def flush(engine: Engine, *, queue: str | None = None, older_than: timedelta | None = None, by: Actor) -> int:
    """Delete failed jobs for good (all, ``queue``'s, or those failed longer than ``older_than`` ago)."""
    statement = delete(FailedJob).returning(FailedJob.queue_name)
    if queue is not None:
        statement = statement.where(FailedJob.queue_name == queue)
    if older_than is not None:
        statement = statement.where(FailedJob.failed_at < func.now() - older_than)
    with engine.begin() as connection:
        queues = connection.execute(statement).scalars().all()
        _record(connection, "flush", Counter(queues), by, _target(None, queue),
                older_than=None if older_than is None else older_than.total_seconds())
    return len(queues)


def remove(engine: Engine, job_id: int, *, by: Actor) -> None:
    """Delete one failed job for good (``forget``); raises :class:`FailedJobNotFound`."""
    with engine.begin() as connection:
        queue = connection.execute(
            delete(FailedJob).where(FailedJob.id == job_id).returning(FailedJob.queue_name)
        ).scalar_one_or_none()
        if queue is None:
            raise FailedJobNotFound(job_id)
        _record(connection, "forget", Counter([queue]), by, _target(job_id, None))


def prune(engine: Engine, *, retention: timedelta) -> int:
    """Delete the failed jobs that failed longer than ``retention`` ago (the schedule's ``prune``); return how many."""
    with engine.begin() as connection:
        queues = connection.execute(
            delete(FailedJob).where(FailedJob.failed_at < func.now() - retention).returning(FailedJob.queue_name)
        ).scalars().all()
        _record(connection, "prune", Counter(queues), _SCHEDULE, None)
    return len(queues)


def like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern whose escape character is a backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def action_totals(connection: Connection) -> list[tuple[str, str, int]]:
    """``(action, queue, jobs)`` summed over the audit trail: what the retried/flushed counters report."""
    rows = connection.execute(
        select(FailedJobAction.action, FailedJobAction.queue_name, func.sum(FailedJobAction.jobs))
        .group_by(FailedJobAction.action, FailedJobAction.queue_name)
    ).all()
    return [(action, queue, int(jobs)) for action, queue, jobs in rows]


def present(row: Any) -> dict[str, Any]:
    """A failed job as the API, the command and the admin page show it."""
    return {
        "id": row.id,
        "message_id": row.message_id,
        "queue": row.queue_name,
        "actor": row.actor_name,
        "args": row.args,
        "kwargs": row.kwargs,
        "attempts": row.attempts,
        "exception": row.exception,
        "traceback": row.traceback,
        "worker": row.worker,
        "enqueued_at": _iso(row.enqueued_at),
        "failed_at": _iso(row.failed_at),
    }


def _retry_body(row: Any) -> bytes:
    """The message again, same id, its attempts forgotten, marked as a retry of this row."""
    options = {**row.options, RETRIED_FROM: row.id}
    return dramatiq.Message(
        queue_name=row.queue_name, actor_name=row.actor_name, args=tuple(row.args), kwargs=row.kwargs,
        options=options, message_id=row.message_id, message_timestamp=int(time.time() * 1000),
    ).encode()


#: Who prunes: antrian's own schedule, which the audit trail (of operators' actions) leaves out.
_SCHEDULE = Actor("schedule", "schedule")


def _target(job_id: int | None, queue: str | None) -> str:
    """What an action on failed jobs acted on, for the audit trail."""
    if job_id is not None:
        return f"failed-job:{job_id}"
    return f"failed-jobs:{queue}" if queue else "failed-jobs:all"


def _record(connection: Connection, action: str, jobs_by_queue: Counter[str], by: Actor, target: str | None,
            **detail: Any) -> None:
    """Count the action in ``failed_job_actions`` (the metrics' source) and, for an operator's, in the audit trail."""
    rows = [{"action": action, "queue_name": q, "jobs": n, "source": by.via} for q, n in jobs_by_queue.items()]
    if rows:
        connection.execute(insert(FailedJobAction), rows)
    if target is not None:
        audit.record(connection, by, action, target, jobs=sum(jobs_by_queue.values()), **detail)


def _storable(value: Any) -> Any:
    """``value`` as PostgreSQL's jsonb takes it: NUL characters (which it refuses) become U+FFFD."""
    return json.loads(json.dumps(value, default=repr).replace("\\u0000", "\\ufffd"))


def _text(value: str) -> str:
    """Text as PostgreSQL takes it: no NUL characters."""
    return value.replace("\x00", "\ufffd")


def _from_ms(timestamp_ms: int | None) -> datetime | None:
    return None if not timestamp_ms else datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m`` or ``45s`` (a bare number is days): the ``--older-than`` of a flush."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    raw = text.strip().lower()
    unit = raw[-1] if raw and raw[-1] in units else "d"
    number = raw[:-1] if raw and raw[-1] in units else raw
    if not number.isdigit() or int(number) > 100_000:
        raise InvalidInput(f"{text!r} is not an age such as 7d, 12h, 30m or 90s")
    return timedelta(**{units[unit]: int(number)})
