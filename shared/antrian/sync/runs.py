"""Starting and reading student payment sync runs (the web API and the ``antrian`` command share this)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NoReturn

import dramatiq
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from antrian.access import audit
from antrian.access.audit import Actor
from antrian.errors import Conflict, NotFound, RunAlreadyRunning
from antrian.messages import FAN_OUT_SYNC_RUN

logger = logging.getLogger(__name__)


class SyncRunNotFound(NotFound):
    """Raised when a sync run is asked for that does not exist."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"sync run {run_id} not found")


class SyncRunNotRunning(Conflict):
    """Raised when a run that is no longer running (finished or cancelled) is asked to cancel or resume."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"sync run {run_id} is {status}, not running")
        self.run_id, self.run_status = run_id, status

    def details(self) -> dict[str, Any]:
        return {"id": self.run_id}


#: Shards of a run's counts (see :class:`antrian.db.models.SyncRunCount`).
SHARDS = 64

_RUN_COLUMNS = "id, status, total, started_at, finished_at"
_RUN_WITH_COUNTS = """
    SELECT r.id, r.status, r.total, r.started_at, r.finished_at,
           coalesce(sum(c.processed), 0) AS processed, coalesce(sum(c.failed), 0) AS failed
    FROM sync_runs r LEFT JOIN sync_run_counts c ON c.run_id = r.id
    WHERE {where} GROUP BY r.id"""
_CREATE_SHARDS = text(
    "INSERT INTO sync_run_counts (run_id, shard) SELECT :run_id, shard FROM generate_series(0, :last) AS shard"
)
# Finishes the run when every student has an outcome. Run it after the outcome's commit: the last
# of two concurrent outcomes then sees both, and the row lock lets only one of them finish it.
_FINISH_IF_COMPLETE = text(
    """UPDATE sync_runs SET status = 'finished', finished_at = now()
       WHERE id = :run_id AND status = 'running' AND items_recorded
         AND total <= (SELECT coalesce(sum(processed), 0) FROM sync_run_counts WHERE run_id = :run_id)
       RETURNING id"""
)


def shard_of(idperson: int) -> int:
    """The count shard a student's outcome goes to (PostgreSQL: ``abs(idperson) % SHARDS``)."""
    return abs(idperson) % SHARDS


def start_run(engine: Engine, broker: dramatiq.Broker, *, by: Actor) -> dict[str, Any]:
    """Record a run over every student there is now and queue its fan-out; return the run.

    The fan-out message is confirmed by RabbitMQ before the run commits, so a committed run
    always has its fan-out; if the commit fails, the fan-out finds no run and does nothing.
    Raises :class:`RunAlreadyRunning` when a run is still going.
    """
    try:
        with engine.begin() as connection:
            row = connection.execute(
                text(
                    f"""INSERT INTO sync_runs (total, last_student_id)
                        SELECT count(*), coalesce(max(id), 0) FROM students
                        RETURNING {_RUN_COLUMNS}, 0 AS processed, 0 AS failed"""
                )
            ).one()
            connection.execute(_CREATE_SHARDS, {"run_id": row.id, "last": SHARDS - 1})
            audit.record(connection, by, "start", f"sync-run:{row.id}", students=row.total)
            FAN_OUT_SYNC_RUN.send(broker, row.id)
    except IntegrityError as exc:
        if "sync_runs_one_running" not in str(exc.orig):
            raise
        running = latest_run(engine)
        raise RunAlreadyRunning(running["id"] if running else 0) from None
    return _present(row._mapping)


def get_run(engine: Engine, run_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(text(_RUN_WITH_COUNTS.format(where="r.id = :id")), {"id": run_id}).one_or_none()
    return None if row is None else _present(row._mapping)


def latest_run(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(_RUN_WITH_COUNTS.format(where="r.id = (SELECT max(id) FROM sync_runs)"))
        ).one_or_none()
    return None if row is None else _present(row._mapping)


def list_runs(engine: Engine, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Runs newest first, with their counts, and how many there are."""
    page = "r.id IN (SELECT id FROM sync_runs ORDER BY id DESC LIMIT :limit OFFSET :offset)"
    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM sync_runs")).scalar_one()
        rows = connection.execute(
            text(_RUN_WITH_COUNTS.format(where=page) + " ORDER BY r.id DESC"), {"limit": limit, "offset": offset}
        ).all()
    return [_present(row._mapping) for row in rows], total


def cancel_run(engine: Engine, run_id: int, *, by: Actor) -> dict[str, Any]:
    """End a running run as ``cancelled``; return it with its counts.

    The run's jobs still queued then end without calling the school API (the actor sees the run
    cancelled), and the fan-out stops publishing. Its counts keep only the students that reached
    an outcome. A new run may start at once: only a ``running`` run blocks one.
    ``by`` is logged and audited with it.
    Raises :class:`SyncRunNotFound`, or :class:`SyncRunNotRunning` when it is finished or cancelled.
    """
    with engine.begin() as connection:
        cancelled = connection.execute(
            text(
                """UPDATE sync_runs SET status = 'cancelled', finished_at = now()
                   WHERE id = :id AND status = 'running' RETURNING id"""
            ),
            {"id": run_id},
        ).first()
        if cancelled is None:
            _refuse(connection, run_id)
        audit.record(connection, by, "cancel", f"sync-run:{run_id}")
    logger.info("sync run %s cancelled by %s (%s)", run_id, by.operator, by.via,
                extra={"event": "sync_run_cancelled", "run_id": run_id, "operator": by.operator, "source": by.via})
    run = get_run(engine, run_id)
    assert run is not None  # nothing deletes runs
    return run


def resume_run(engine: Engine, broker: dramatiq.Broker, run_id: int, *, by: Actor) -> dict[str, Any]:
    """Send the jobs of a running (stalled) run's pending students again; return ``{"id", "status", "pending"}``.

    The run's fan-out is queued again (confirmed by RabbitMQ before this returns) from the start of
    its pending students: it records the items if it never did and publishes one message per student
    still pending, in confirmed batches. A student whose message was only slow, not lost, then has two;
    the second finds it done and is ignored, so the counts stay exact.
    Raises :class:`SyncRunNotFound`, or :class:`SyncRunNotRunning` when it is finished or cancelled.
    """
    with engine.begin() as connection:
        row = connection.execute(
            text(
                """UPDATE sync_runs SET fanout_cursor = NULL, fanout_done = false
                   WHERE id = :id AND status = 'running' RETURNING items_recorded, total"""
            ),
            {"id": run_id},
        ).first()
        if row is None:
            _refuse(connection, run_id)
        pending = row.total
        if row.items_recorded:
            pending = connection.execute(
                text("SELECT count(*) FROM sync_items WHERE run_id = :id AND status = 'pending'"), {"id": run_id}
            ).scalar_one()
        audit.record(connection, by, "resume", f"sync-run:{run_id}", pending=pending)
    # Sent once the reset is committed, or the fan-out could still see the run fanned out and do nothing. If
    # the send fails, the run stays stalled as it was, and resuming it again is safe.
    FAN_OUT_SYNC_RUN.send(broker, run_id)
    logger.info("sync run %s resumed by %s (%s): %s pending students sent again", run_id, by.operator, by.via, pending,
                extra={"event": "sync_run_resumed", "run_id": run_id, "operator": by.operator, "source": by.via})
    return {"id": run_id, "status": "running", "pending": pending}


def idle_seconds(connection: Connection) -> float:
    """Seconds since the running run's last student outcome (or its start); 0 when no run is running."""
    idle = connection.execute(
        text(
            """SELECT extract(epoch FROM now() - greatest(
                   r.started_at, (SELECT max(i.finished_at) FROM sync_items i WHERE i.run_id = r.id)))
               FROM sync_runs r WHERE r.status = 'running'"""
        )
    ).scalar_one_or_none()
    return max(float(idle or 0), 0.0)


def _refuse(connection: Connection, run_id: int) -> NoReturn:
    """Raise why ``run_id`` cannot be cancelled or resumed: unknown, or no longer running."""
    status = connection.execute(text("SELECT status FROM sync_runs WHERE id = :id"), {"id": run_id}).scalar()
    if status is None:
        raise SyncRunNotFound(run_id)
    raise SyncRunNotRunning(run_id, status)


def finish_if_complete(connection: Connection, run_id: int) -> bool:
    """Mark the run finished if its last student has an outcome; True if this call finished it."""
    return connection.execute(_FINISH_IF_COMPLETE, {"run_id": run_id}).first() is not None


def list_failures(engine: Engine, run_id: int, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The run's failed students with the last error of each, and how many there are."""
    with engine.connect() as connection:
        total = connection.execute(
            text("SELECT count(*) FROM sync_items WHERE run_id = :id AND status = 'failed'"), {"id": run_id}
        ).scalar_one()
        rows = connection.execute(
            text(
                """SELECT i.idperson, s.name, i.error, i.finished_at
                   FROM sync_items i LEFT JOIN students s ON s.idperson = i.idperson
                   WHERE i.run_id = :id AND i.status = 'failed'
                   ORDER BY i.idperson LIMIT :limit OFFSET :offset"""
            ),
            {"id": run_id, "limit": limit, "offset": offset},
        ).all()
    items = [
        {"idperson": r.idperson, "name": r.name, "error": r.error, "failed_at": _iso(r.finished_at)} for r in rows
    ]
    return items, total


def _present(row: Any) -> dict[str, Any]:
    """A run in the API's shape (the old admin page's names included)."""
    total, processed, failed = row["total"], row["processed"], row["failed"]
    running = row["status"] == "running"
    if total:
        percent = round(processed * 100.0 / total, 2)
    else:
        percent = 0.0 if running else 100.0
    return {
        "id": row["id"],
        "status": row["status"],
        "total": total,
        "processed": processed,
        "failed": failed,
        "successCount": processed - failed,
        "percent": percent,
        "isRunning": running,
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
