"""The fan-out of a sync run: record every student's item, then publish their messages in confirmed batches.

Recording is one statement over the run's snapshot of students: it sets the exact total and each
count shard's total at once. Publishing then walks the recorded pending items (never the students
table again, so a student deleted meanwhile still gets its message and its outcome), a few batches
in flight so RabbitMQ is never idle, moving a cursor only past confirmed batches. Killed half-way,
the fan-out is redelivered and goes on from the cursor; what was in flight may go out twice, which
the actor ignores.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.db.engine import retry_on_disconnect
from antrian.messages import SYNC_QUEUE, SYNC_STUDENT_PAYMENT
from antrian.sync.runs import SHARDS
from sync_api.sync import metrics as worker_metrics

logger = logging.getLogger(__name__)

#: Students per confirmed batch.
BATCH_SIZE = 2000
#: Batches published but not yet confirmed: RabbitMQ confirms persistent messages after a disk
#: sync, so waiting for each batch before sending the next leaves it idle in between.
BATCHES_IN_FLIGHT = 4
#: First key of the advisory lock that keeps two fan-outs of one run apart ("fo").
FANOUT_LOCK_NAMESPACE = 0x666F
#: How long to wait for the run's row: the request publishes the fan-out just before it commits.
RUN_VISIBLE_WAIT_S = 30.0

# One statement: the items of every student in the run's snapshot, each shard's total, and the
# run's exact total; an empty run finishes here. Done once (``items_recorded``).
_RECORD_ITEMS = text(
    """WITH items AS (
           INSERT INTO sync_items (run_id, idperson)
           SELECT :run_id, idperson FROM students WHERE id <= :last_student_id
           ON CONFLICT DO NOTHING
           RETURNING idperson
       ), shard_totals AS (
           UPDATE sync_run_counts c SET total = c.total + added.n
           FROM (SELECT abs(idperson) % :shards AS shard, count(*) AS n FROM items GROUP BY 1) added
           WHERE c.run_id = :run_id AND c.shard = added.shard
       ), counted AS (SELECT count(*) AS n FROM items)
       UPDATE sync_runs SET
           items_recorded = true,
           total = counted.n,
           status = CASE WHEN counted.n = 0 THEN 'finished' ELSE status END,
           finished_at = CASE WHEN counted.n = 0 THEN now() ELSE finished_at END
       FROM counted WHERE id = :run_id AND NOT items_recorded
       RETURNING total"""
)
_NEXT_BATCH = text(
    """SELECT idperson FROM sync_items
       WHERE run_id = :run_id AND status = 'pending' AND idperson > :cursor
         AND EXISTS (SELECT 1 FROM sync_runs WHERE id = :run_id AND status = 'running')
       ORDER BY idperson LIMIT :limit"""
)
_SAVE_CURSOR = text("UPDATE sync_runs SET fanout_cursor = :cursor WHERE id = :run_id")
_FANOUT_DONE = text("UPDATE sync_runs SET fanout_done = true WHERE id = :run_id")
#: Below every idperson: where a fresh fan-out starts.
_START = -(2**63)


def fan_out(engine: Engine, run_id: int, publisher_factory: Callable[[], ConfirmedPublisher]) -> None:
    """Publish every student message of ``run_id`` that has not been confirmed yet."""
    with engine.connect() as lock_connection:
        locked = lock_connection.execute(
            text("SELECT pg_try_advisory_lock(:ns, :run_id)"), {"ns": FANOUT_LOCK_NAMESPACE, "run_id": run_id}
        ).scalar_one()
        lock_connection.commit()
        if not locked:
            logger.info("sync run %s is being fanned out by another worker", run_id)
            return
        try:
            _fan_out_locked(engine, run_id, publisher_factory)
        finally:
            lock_connection.execute(
                text("SELECT pg_advisory_unlock(:ns, :run_id)"), {"ns": FANOUT_LOCK_NAMESPACE, "run_id": run_id}
            )
            lock_connection.commit()


def _fan_out_locked(engine: Engine, run_id: int, publisher_factory: Callable[[], ConfirmedPublisher]) -> None:
    run = _wait_for_run(engine, run_id)
    if run is None:
        logger.warning("sync run %s does not exist; the request that started it did not commit", run_id)
        return
    if run.fanout_done or run.status != "running":  # cancelled: its students are not sent
        return
    if not run.items_recorded:
        total = retry_on_disconnect(lambda: _record_items(engine, run_id, run.last_student_id))
        logger.info("sync run %s: %s students recorded", run_id, total)
    published, started = 0, time.perf_counter()
    fetch = functools.partial(_next_batch, engine, run_id)
    with publisher_factory() as publisher:
        in_flight: list[tuple[int, list[int]]] = []  # (confirm mark, idpersons), oldest first
        batch = fetch(_START if run.fanout_cursor is None else run.fanout_cursor)
        while batch or in_flight:
            if batch:
                in_flight.append((publisher.publish(SYNC_QUEUE, _bodies(batch, run_id)), batch))
                # Read the next batch while RabbitMQ stores this one.
                batch = fetch(batch[-1])
            if len(in_flight) >= BATCHES_IN_FLIGHT or not batch:
                mark, confirmed = in_flight.pop(0)
                publisher.wait_for_confirms(mark)
                _execute(engine, _SAVE_CURSOR, {"cursor": confirmed[-1], "run_id": run_id})
                published += len(confirmed)
                worker_metrics.FANOUT_MESSAGES.inc(len(confirmed))
    _execute(engine, _FANOUT_DONE, {"run_id": run_id})
    elapsed = time.perf_counter() - started
    logger.info(
        "sync run %s fanned out: %s messages in %.2fs (%.0f/s)",
        run_id, published, elapsed, published / elapsed if elapsed else 0,
    )


def _record_items(engine: Engine, run_id: int, last_student_id: int) -> int:
    with engine.begin() as connection:
        return connection.execute(
            _RECORD_ITEMS, {"run_id": run_id, "last_student_id": last_student_id, "shards": SHARDS}
        ).scalar_one()


def _next_batch(engine: Engine, run_id: int, cursor: int) -> list[int]:
    """The run's next pending idpersons after ``cursor``."""
    with engine.connect() as connection:
        return list(
            connection.execute(_NEXT_BATCH, {"run_id": run_id, "cursor": cursor, "limit": BATCH_SIZE}).scalars()
        )


def _execute(engine: Engine, statement, parameters: dict) -> None:
    def work() -> None:
        with engine.begin() as connection:
            connection.execute(statement, parameters)

    retry_on_disconnect(work)


def _bodies(idpersons: list[int], run_id: int) -> list[bytes]:
    return [SYNC_STUDENT_PAYMENT.encode(idperson, run_id) for idperson in idpersons]


def _wait_for_run(engine: Engine, run_id: int):
    deadline = time.monotonic() + RUN_VISIBLE_WAIT_S
    while True:
        with engine.connect() as connection:
            run = connection.execute(
                text(
                    "SELECT status, last_student_id, items_recorded, fanout_cursor, fanout_done FROM sync_runs"
                    " WHERE id = :id"
                ),
                {"id": run_id},
            ).one_or_none()
        if run is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.05)
