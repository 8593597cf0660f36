"""One student's sync in one run: fetch the pembayaran, then record the outcome exactly once.

The item row (``sync_items``) is the single source of truth: it moves from ``pending`` to
``success`` or ``failed`` once, and the run's counters move in the same statement, so a
redelivered or duplicated message can neither store twice nor count twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from antrian.db.engine import retry_on_disconnect
from antrian.sync.runs import finish_if_complete, shard_of
from sync_api.sync import metrics as worker_metrics
from sync_api.sync.batching import Batcher
from sync_api.sync.errors import PermanentUpstreamError, StudentSyncFailed, TransientUpstreamError, bounded
from sync_api.sync.retries import STUDENT
from sync_api.sync.upstream import SchoolApi

logger = logging.getLogger(__name__)

#: The most students one statement reads or records: a worker process's threads, and then some.
BATCH_SIZE = 64

# Each asked (run, student)'s item, whether the student still exists, and its run's status; one row per item found.
# Driven by the asked keys, so that each reaches its item by the primary key whatever the table's statistics say
# (joined to sync_runs first, a fresh run's items were read by run_id alone: 4,700 rows a key).
_ITEM_STATES = text(
    """SELECT k.ord, i.status, i.student_exists, i.run_status
       FROM unnest(CAST(:run_ids AS bigint[]), CAST(:idpersons AS bigint[]))
                WITH ORDINALITY AS k(run_id, idperson, ord),
       LATERAL (SELECT i.status, EXISTS (SELECT FROM students s WHERE s.idperson = i.idperson) AS student_exists,
                       (SELECT r.status FROM sync_runs r WHERE r.id = i.run_id) AS run_status
                FROM sync_items i WHERE i.run_id = k.run_id AND i.idperson = k.idperson) i"""
)

# One statement for a batch of outcomes (distinct students), so one transaction that the server finishes even when
# the worker is cut off after sending it: each item leaves one of the states it may leave (``pending``; ``failed``
# too for an operator's retry) or nothing happens to it; a success stores the student's pembayaran; each shard of
# the run's counts takes its items' changes. Shards keep concurrent batches from queueing on a single row lock.
# Every batch locks its items sorted, then its shards sorted (``locked`` hands the UPDATE each shard only after
# locking it, in order), so that two batches of two processes never wait on each other in a circle. A first
# outcome (from 'pending') counts as processed; a retried failed job that now succeeds (from 'failed') turns one
# failure into a success; failing again changes no count. It answers each counted item with the state it left,
# and each run whose shard this completed: only then can the run be complete.
_RECORD_OUTCOMES = text(
    """WITH input AS (
           SELECT * FROM unnest(CAST(:run_ids AS bigint[]), CAST(:idpersons AS bigint[]), CAST(:statuses AS text[]),
                                CAST(:errors AS text[]), CAST(:data AS text[]), CAST(:retried AS boolean[]),
                                CAST(:shards AS smallint[]))
               AS t(run_id, idperson, status, error, data, retried, shard)
       ), prior AS (
           SELECT i.run_id, i.idperson, i.status AS was, t.status, t.error, t.data, t.shard
           FROM sync_items i JOIN input t ON t.run_id = i.run_id AND t.idperson = i.idperson
           WHERE i.status = 'pending' OR (t.retried AND i.status = 'failed')
           ORDER BY i.run_id, i.idperson
           FOR UPDATE OF i
       ), item AS (
           UPDATE sync_items i SET status = p.status, error = p.error, finished_at = now()
           FROM prior p WHERE i.run_id = p.run_id AND i.idperson = p.idperson
       ), student AS (
           UPDATE students s SET pembayaran = CAST(p.data AS jsonb), pembayaran_synced_at = now()
           FROM prior p WHERE p.status = 'success' AND s.idperson = p.idperson
       ), deltas AS (
           SELECT run_id, shard, count(*) FILTER (WHERE was = 'pending') AS processed,
                  count(*) FILTER (WHERE status = 'failed') - count(*) FILTER (WHERE was = 'failed') AS failed
           FROM prior GROUP BY run_id, shard
       ), locked AS (
           SELECT c.run_id, c.shard FROM sync_run_counts c JOIN deltas d ON d.run_id = c.run_id AND d.shard = c.shard
           ORDER BY c.run_id, c.shard
           FOR UPDATE OF c
       ), counts AS (
           UPDATE sync_run_counts c SET processed = c.processed + d.processed, failed = c.failed + d.failed
           FROM locked l JOIN deltas d ON d.run_id = l.run_id AND d.shard = l.shard
           WHERE c.run_id = l.run_id AND c.shard = l.shard
           RETURNING c.run_id, d.processed > 0 AND c.processed >= c.total AS complete
       )
       SELECT run_id, idperson, was, false AS complete FROM prior
       UNION ALL SELECT run_id, NULL, NULL, complete FROM counts WHERE complete"""
)
#: PostgreSQL's SQLSTATE for a deadlock, and how often a batch that hit one is run.
DEADLOCK, DEADLOCK_ATTEMPTS = "40P01", 3
#: The states an outcome may leave: a first delivery's, and a retried failed job's too.
FIRST, RETRIED = ["pending"], ["pending", "failed"]


@dataclass(frozen=True)
class Outcome:
    """A student's final outcome in a run, to record."""

    run_id: int
    idperson: int
    status: str
    data: Any = None
    error: str | None = None
    from_: tuple[str, ...] = tuple(FIRST)


class StudentSync:
    """Syncs students for runs.

    The worker's threads read their items' states and record their outcomes through two batchers (:class:`Batcher`):
    one statement for the students that several threads asked about at once, one commit for their outcomes.

    Parameters:
      engine(Engine): the database, in autocommit mode (each statement is its own transaction).
      school_api(SchoolApi): the upstream client.
      batch_size(int): the most students one statement reads or records.
    """

    def __init__(self, *, engine: Engine, school_api: SchoolApi, batch_size: int = BATCH_SIZE) -> None:
        self.engine = engine
        self.school_api = school_api
        self._states = Batcher(self._read_states, name="sync-item-states", max_size=batch_size)
        self._outcomes = Batcher(self._record_outcomes, name="sync-outcomes", max_size=batch_size)

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
        return self._states.call((run_id, idperson))

    def _read_states(self, keys: Sequence[tuple[int, int]]) -> list[Any]:
        with self.engine.connect() as connection:
            rows = connection.execute(_ITEM_STATES, {"run_ids": [run_id for run_id, _ in keys],
                                                     "idpersons": [idperson for _, idperson in keys]}).all()
        found = {row.ord: row for row in rows}
        return [found.get(n) for n in range(1, len(keys) + 1)]

    def record(self, idperson: int, run_id: int, *, status: str, data: Any = None, error: str | None = None,
               from_: list[str] = FIRST) -> bool:
        """Record the student's final outcome; False when it had one already (nothing changes then).

        ``from_`` is :data:`RETRIED` for an operator's retry: a recorded failure may then be replaced.
        ``error`` is stored :func:`bounded` (500 characters at most). Returns once the outcome is committed
        (with those of the other threads that recorded at the same time).
        """
        outcome = Outcome(run_id, idperson, status, data if status == "success" else None,
                          bounded(error) if error is not None else None, tuple(from_))
        counted, was = retry_on_disconnect(lambda: self._outcomes.call(outcome))
        if counted and was != status:  # a retried failure failing again is no new outcome
            worker_metrics.STUDENTS.labels(status).inc()
        return counted

    def _record_outcomes(self, outcomes: Sequence[Outcome]) -> list[tuple[bool, str | None]]:
        """Record a batch; each outcome's (counted, state it left). Two outcomes for one student (two deliveries
        of its message at once) go in turns, each its own transaction, as they would one by one."""
        results: dict[int, tuple[bool, str | None]] = {}
        pending = list(enumerate(outcomes))
        runs_to_check: set[int] = set()
        while pending:
            turn: dict[tuple[int, int], tuple[int, Outcome]] = {}
            later = []
            for n, outcome in pending:
                key = (outcome.run_id, outcome.idperson)
                if key in turn:
                    later.append((n, outcome))
                else:
                    turn[key] = (n, outcome)
            recorded, completed = self._record_distinct([outcome for _, outcome in turn.values()])
            runs_to_check |= completed
            for key, (n, outcome) in turn.items():
                was = recorded.get(key)
                results[n] = (key in recorded, was)
                if key not in recorded:
                    # A first try may have committed the last outcome and then lost its connection before it
                    # could finish the run.
                    runs_to_check.add(outcome.run_id)
            pending = later
        for run_id in sorted(runs_to_check):
            self._finish_if_complete(run_id)
        return [results[n] for n in range(len(outcomes))]


    def _record_distinct(self, outcomes: list[Outcome]) -> tuple[dict[tuple[int, int], str], set[int]]:
        """Record distinct students' outcomes: the counted ones (the state each left), and the runs that had a shard
        completed. A deadlock (only two deliveries of one student's message at once can still make one) is tried
        again at once: PostgreSQL rolled the statement back."""
        for attempt in range(DEADLOCK_ATTEMPTS):
            try:
                with self.engine.connect() as connection:
                    return _record(connection, outcomes)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != DEADLOCK or attempt == DEADLOCK_ATTEMPTS - 1:
                    raise
                logger.warning("sync outcomes deadlocked with another batch; trying again: %s", exc.orig)
        raise AssertionError("unreachable")


def _record(connection: Connection, outcomes: list[Outcome]) -> tuple[dict[tuple[int, int], str], set[int]]:
    """Record distinct students' outcomes in one statement; see :data:`_RECORD_OUTCOMES`."""
    shards = [shard_of(outcome.idperson) for outcome in outcomes]
    rows = connection.execute(_RECORD_OUTCOMES, {
        "run_ids": [o.run_id for o in outcomes],
        "idpersons": [o.idperson for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "errors": [o.error for o in outcomes],
        "data": [json.dumps(o.data) if o.status == "success" else None for o in outcomes],
        "retried": ["failed" in o.from_ for o in outcomes],
        "shards": shards,
    }).all()
    recorded = {(row.run_id, row.idperson): row.was for row in rows if row.idperson is not None}
    return recorded, {row.run_id for row in rows if row.complete}
