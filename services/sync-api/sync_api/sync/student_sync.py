"""One student's sync in one run: fetch the pembayaran, then record the outcome exactly once.

The item row (``sync_items``) is the single source of truth: it moves from ``pending`` to
``success`` or ``failed`` once, and the run's counters move in the same statement, so a
redelivered or duplicated message can neither store twice nor count twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Engine, text

from antrian.db.engine import retry_on_disconnect
from antrian.sync.runs import finish_if_complete, shard_of
from sync_api.sync import metrics as worker_metrics
from sync_api.sync.errors import PermanentUpstreamError, StudentSyncFailed, TransientUpstreamError, bounded
from sync_api.sync.retries import STUDENT
from sync_api.sync.upstream import SchoolApi

logger = logging.getLogger(__name__)

_ITEM_STATE = text(
    """SELECT i.status, s.id IS NOT NULL AS student_exists, r.status AS run_status
       FROM sync_items i JOIN sync_runs r ON r.id = i.run_id LEFT JOIN students s ON s.idperson = i.idperson
       WHERE i.run_id = :run_id AND i.idperson = :idperson"""
)

# One statement, so one transaction and one round trip: the item leaves one of the states in
# :from (or nothing happens), the student's pembayaran is stored on success, and one shard of the
# run's counts takes the change. Shards keep concurrent outcomes from queueing on a single row
# lock. A first outcome (from 'pending') counts as processed; a retried failed job that now
# succeeds (from 'failed') turns one failure into a success; failing again changes no count. It
# answers whether this outcome completed its shard: only then can the run be complete.
_RECORD_OUTCOME = text(
    """WITH prior AS (
           SELECT status FROM sync_items
           WHERE run_id = :run_id AND idperson = :idperson AND status = ANY(CAST(:from AS text[]))
           FOR UPDATE
       ), item AS (
           UPDATE sync_items SET status = :status, error = :error, finished_at = now()
           WHERE run_id = :run_id AND idperson = :idperson AND EXISTS (SELECT 1 FROM prior)
           RETURNING idperson
       ), student AS (
           UPDATE students SET pembayaran = CAST(:data AS jsonb), pembayaran_synced_at = now()
           WHERE :status = 'success' AND idperson = (SELECT idperson FROM item)
       ), counts AS (
           UPDATE sync_run_counts SET
               processed = processed + CASE WHEN prior.status = 'pending' THEN 1 ELSE 0 END,
               failed = failed + CASE WHEN :status = 'failed' THEN 1 ELSE 0 END
                               - CASE WHEN prior.status = 'failed' THEN 1 ELSE 0 END
           FROM prior
           WHERE run_id = :run_id AND shard = :shard AND EXISTS (SELECT 1 FROM item)
           RETURNING prior.status = 'pending' AND processed >= total AS complete
       )
       SELECT (SELECT count(*) FROM item) AS counted, (SELECT status FROM prior) AS was,
              coalesce((SELECT complete FROM counts), false) AS shard_complete"""
)
#: The states an outcome may leave: a first delivery's, and a retried failed job's too.
FIRST, RETRIED = ["pending"], ["pending", "failed"]


class StudentSync:
    """Syncs students for runs.

    Parameters:
      engine(Engine): the database, in autocommit mode (each statement is its own transaction).
      school_api(SchoolApi): the upstream client.
    """

    def __init__(self, *, engine: Engine, school_api: SchoolApi) -> None:
        self.engine = engine
        self.school_api = school_api

    def sync(self, idperson: int, run_id: int, *, final_attempt: bool, from_: list[str] = FIRST) -> None:
        """Fetch and store one student's pembayaran for ``run_id``.

        ``from_`` is :data:`RETRIED` for an operator's retry of the failed job: a student who failed is
        tried again, and a success then replaces the failure in the run's counts.

        Raises TransientUpstreamError to be retried (after recording the failure when this was
        the final attempt) and StudentSyncFailed once a permanent failure is recorded.
        """
        state = retry_on_disconnect(lambda: self._item_state(idperson, run_id))
        if state is None:
            logger.warning("no sync item for student %s in run %s; message ignored", idperson, run_id)
            return
        if state.run_status == "cancelled":
            # An operator cancelled the run: its outstanding jobs end here, without an outcome.
            logger.info("sync run %s is cancelled; student %s not synced", run_id, idperson)
            return
        if state.status not in from_:
            logger.info("student %s already %s in run %s; duplicate message ignored", idperson, state.status, run_id)
            # The first delivery may have died between recording the last outcome and finishing the run.
            retry_on_disconnect(lambda: self._finish_if_complete(run_id))
            return
        if not state.student_exists:
            self._fail(idperson, run_id, "student no longer exists", from_)
        try:
            data = self.school_api.fetch_pembayaran(idperson)
        except PermanentUpstreamError as exc:
            self._fail(idperson, run_id, str(exc), from_)
        except TransientUpstreamError as exc:
            if final_attempt:
                self.record(idperson, run_id, status="failed", error=STUDENT.after_all(str(exc)), from_=from_)
            raise
        self.record(idperson, run_id, status="success", data=data, from_=from_)

    def _fail(self, idperson: int, run_id: int, reason: str, from_: list[str]) -> None:
        self.record(idperson, run_id, status="failed", error=reason, from_=from_)
        raise StudentSyncFailed(f"student {idperson}: {reason}")

    def _finish_if_complete(self, run_id: int) -> None:
        with self.engine.connect() as connection:
            if finish_if_complete(connection, run_id):
                logger.info("sync run %s finished", run_id)

    def _item_state(self, idperson: int, run_id: int) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(_ITEM_STATE, {"run_id": run_id, "idperson": idperson}).one_or_none()

    def record(self, idperson: int, run_id: int, *, status: str, data: Any = None, error: str | None = None,
               from_: list[str] = FIRST) -> bool:
        """Record the student's final outcome; False when it had one already (nothing changes then).

        ``from_`` is :data:`RETRIED` for an operator's retry: a recorded failure may then be replaced.
        ``error`` is stored :func:`bounded` (500 characters at most).
        """
        if error is not None:
            error = bounded(error)

        def work() -> tuple[bool, bool]:
            with self.engine.connect() as connection:
                counted, was, shard_complete = connection.execute(
                    _RECORD_OUTCOME,
                    {
                        "run_id": run_id,
                        "idperson": idperson,
                        "from": from_,
                        "shard": shard_of(idperson),
                        "status": status,
                        "error": error,
                        "data": json.dumps(data) if status == "success" else None,
                    },
                ).one()
            if counted and was != status:  # a retried failure failing again is no new outcome
                worker_metrics.STUDENTS.labels(status).inc()
            return bool(counted), shard_complete

        counted, shard_complete = retry_on_disconnect(work)
        # Checked too when nothing was counted: a first try may have committed the last outcome
        # and then lost its connection before it could finish the run.
        if shard_complete or not counted:
            retry_on_disconnect(lambda: self._finish_if_complete(run_id))
        return counted
