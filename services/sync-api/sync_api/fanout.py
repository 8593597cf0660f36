"""The fan-out of a sync run: one message per student, published in confirmed batches.

It records the run's items and publishes their messages batch by batch, moving a cursor only
after RabbitMQ confirmed a batch, with a few batches in flight so RabbitMQ is never idle.
Killed half-way, it is redelivered and goes on from the cursor; the messages of the batches
that were in flight may go out twice, which the actor ignores.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from antrian.messages import SYNC_QUEUE, SYNC_STUDENT_PAYMENT
from antrian.publisher import ConfirmedPublisher
from antrian.sync_runs import SHARDS, finish_if_complete

from . import worker_metrics

logger = logging.getLogger(__name__)

#: Students per confirmed batch.
BATCH_SIZE = 2000
#: Batches published but not yet confirmed: RabbitMQ confirms persistent messages after a disk
#: sync, so waiting for each batch before sending the next leaves it idle in between.
BATCHES_IN_FLIGHT = 4
#: First key of the advisory lock that keeps two fan-outs of one run apart ("fo").
FANOUT_LOCK_NAMESPACE = 0x666F
#: How long to wait for the run's row: the request publishes the fan-out just before it commits.
RUN_VISIBLE_WAIT_S = 5.0

# Records the batch's items (once: a batch read again after a crash adds nothing) and adds them
# to their shards' totals, in one statement.
_NEXT_BATCH = text(
    """WITH batch AS (
           SELECT id, idperson FROM students
           WHERE id > :cursor AND id <= :last_student_id
           ORDER BY id LIMIT :limit
       ), items AS (
           INSERT INTO sync_items (run_id, idperson) SELECT :run_id, idperson FROM batch
           ON CONFLICT DO NOTHING
           RETURNING idperson
       ), shard_totals AS (
           UPDATE sync_run_counts c SET total = c.total + added.n
           FROM (SELECT idperson % :shards AS shard, count(*) AS n FROM items GROUP BY 1) added
           WHERE c.run_id = :run_id AND c.shard = added.shard
       )
       SELECT id, idperson FROM batch ORDER BY id"""
)
_SAVE_CURSOR = text("UPDATE sync_runs SET fanout_cursor = :cursor WHERE id = :run_id")
# The run's total becomes the exact number of its items (students deleted since the start drop out).
_FANOUT_DONE = text(
    """UPDATE sync_runs SET fanout_done = true,
           total = (SELECT count(*) FROM sync_items WHERE run_id = :run_id)
       WHERE id = :run_id RETURNING total"""
)


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
    if run.fanout_done:
        return
    published, started = 0, time.perf_counter()
    fetch = functools.partial(_next_batch, engine, run_id, run.last_student_id)
    with publisher_factory() as publisher:
        in_flight: list[tuple[int, list]] = []  # (confirm mark, batch), oldest first
        batch = fetch(run.fanout_cursor)
        while batch or in_flight:
            if batch:
                in_flight.append((publisher.publish(SYNC_QUEUE, _bodies(batch, run_id)), batch))
                # Read and record the next batch while RabbitMQ stores this one.
                batch = fetch(batch[-1].id)
            if len(in_flight) > BATCHES_IN_FLIGHT or not batch:
                mark, confirmed = in_flight.pop(0)
                publisher.wait_for_confirms(mark)
                _save_cursor(engine, run_id, confirmed[-1].id)
                published += len(confirmed)
                worker_metrics.FANOUT_MESSAGES.inc(len(confirmed))
    with engine.begin() as connection:
        total = connection.execute(_FANOUT_DONE, {"run_id": run_id}).scalar_one()
    with engine.begin() as connection:
        finished = finish_if_complete(connection, run_id)
    elapsed = time.perf_counter() - started
    logger.info(
        "sync run %s fanned out: %s messages in %.2fs (%.0f/s); %s students in all%s",
        run_id, published, elapsed, published / elapsed if elapsed else 0, total, ", run finished" if finished else "",
    )


def _next_batch(engine: Engine, run_id: int, last_student_id: int, cursor: int) -> list:
    """The run's next students after ``cursor``, their items recorded (once) on the way."""
    with engine.begin() as connection:
        return connection.execute(
            _NEXT_BATCH,
            {"run_id": run_id, "cursor": cursor, "last_student_id": last_student_id, "limit": BATCH_SIZE,
             "shards": SHARDS},
        ).all()


def _save_cursor(engine: Engine, run_id: int, cursor: int) -> None:
    with engine.begin() as connection:
        connection.execute(_SAVE_CURSOR, {"cursor": cursor, "run_id": run_id})


def _bodies(batch: list, run_id: int) -> list[bytes]:
    return [SYNC_STUDENT_PAYMENT.encode(row.idperson, run_id) for row in batch]


def _wait_for_run(engine: Engine, run_id: int):
    deadline = time.monotonic() + RUN_VISIBLE_WAIT_S
    while True:
        with engine.connect() as connection:
            run = connection.execute(
                text("SELECT last_student_id, fanout_cursor, fanout_done FROM sync_runs WHERE id = :id"),
                {"id": run_id},
            ).one_or_none()
        if run is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.05)
