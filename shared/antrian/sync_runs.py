"""Starting and reading student payment sync runs (the web API and the ``antrian`` command share this)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dramatiq
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from .errors import RunAlreadyRunning
from .messages import FAN_OUT_SYNC_RUN

_RUN_COLUMNS = "id, status, total, processed, failed, started_at, finished_at"


def start_run(engine: Engine, broker: dramatiq.Broker) -> dict[str, Any]:
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
                        RETURNING {_RUN_COLUMNS}"""
                )
            ).one()
            FAN_OUT_SYNC_RUN.send(broker, row.id)
    except IntegrityError as exc:
        if "sync_runs_one_running" not in str(exc.orig):
            raise
        running = latest_run(engine)
        raise RunAlreadyRunning(running["id"] if running else 0) from None
    return _present(row._mapping)


def get_run(engine: Engine, run_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT {_RUN_COLUMNS} FROM sync_runs WHERE id = :id"), {"id": run_id}
        ).one_or_none()
    return None if row is None else _present(row._mapping)


def latest_run(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT {_RUN_COLUMNS} FROM sync_runs ORDER BY id DESC LIMIT 1")
        ).one_or_none()
    return None if row is None else _present(row._mapping)


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
