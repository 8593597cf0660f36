"""Part (h): ``antrian jobs retry --all`` on many failed jobs, beside retrying them one at a time.

``jobs`` failed invoice jobs are stored in ``failed_jobs`` (one INSERT ... SELECT). Then, on the same
data regenerated before each:

- ``failed_jobs.retry(...)`` as the command and the API call it: batches of 500 rows locked, published
  on one channel, confirmed by RabbitMQ together, and deleted in the transaction that locked them;
- the straightforward loop, as ``antrian jobs retry ID`` would do it for each id: per job, its row
  locked in a transaction, the message enqueued through Dramatiq's broker (which waits for that one
  confirm), the row deleted, commit.

After each: every job is on queue ``emails`` exactly once (message ids counted) and the table is empty.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sqlalchemy import Engine, delete, select, text

from . import common

SEED = text(
    """INSERT INTO failed_jobs (message_id, queue_name, actor_name, args, kwargs, options, attempts, exception)
       SELECT 'bench-' || g, 'emails', 'send_invoice_email', jsonb_build_array(g), '{}', '{}', 3,
              'EmailDeferred: 451 4.3.0 try again later'
       FROM generate_series(1, :n) g"""
)


def run(engine: Engine, *, jobs: int) -> dict:
    from antrian.access.audit import Actor
    from antrian.config import load_settings
    from antrian.jobs import failed_jobs
    from antrian.runtime.broker import make_broker

    settings = replace(load_settings({}), database_url=common.DATABASE_URL, broker_url=common.BROKER_URL)
    broker = make_broker(settings)
    try:
        broker.declare_queue("emails", ensure=True)
        _seed(engine, jobs)
        started = time.perf_counter()
        retried = failed_jobs.retry(engine, broker, common.BROKER_URL, by=Actor("bench", "cli"))
        batched_s = time.perf_counter() - started
        batched_check = _check(engine, jobs, retried)

        _seed(engine, jobs)
        started = time.perf_counter()
        one_by_one = _retry_one_at_a_time(engine, broker)
        loop_s = time.perf_counter() - started
        loop_check = _check(engine, jobs, one_by_one)
    finally:
        broker.close()
    return {
        "jobs": jobs,
        "batched": {"seconds": round(batched_s, 2), "per_s": round(jobs / batched_s), **batched_check},
        "one_at_a_time": {"seconds": round(loop_s, 2), "per_s": round(jobs / loop_s), **loop_check},
        "ratio": round(loop_s / batched_s, 1),
    }


def _seed(engine: Engine, jobs: int) -> None:
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE failed_jobs, failed_job_actions RESTART IDENTITY"))
        connection.execute(SEED, {"n": jobs})
    common.vacuum(engine, "failed_jobs")
    common.purge_queues(common.EMAIL_QUEUES)


def _retry_one_at_a_time(engine: Engine, broker) -> int:
    import dramatiq

    from antrian.db.models import FailedJob

    with engine.connect() as connection:
        ids = connection.execute(select(FailedJob.id).order_by(FailedJob.id)).scalars().all()
    for job_id in ids:
        with engine.begin() as connection:
            row = connection.execute(select(FailedJob.__table__).where(FailedJob.id == job_id).with_for_update()).one()
            broker.enqueue(dramatiq.Message(queue_name=row.queue_name, actor_name=row.actor_name,
                                            args=tuple(row.args), kwargs=row.kwargs,
                                            options={"failed_job_id": row.id}, message_id=row.message_id,
                                            message_timestamp=int(time.time() * 1000)))
            connection.execute(delete(FailedJob).where(FailedJob.id == job_id))
    return len(ids)


def _check(engine: Engine, jobs: int, retried: int) -> dict:
    """Every job on the queue once, none left stored; the messages are taken off the queue to count them."""
    from tests.support import take_messages

    messages = take_messages("emails", common.BROKER_URL)
    ids = [m["message_id"] for m in messages]
    with engine.connect() as connection:
        left = connection.execute(text("SELECT count(*) FROM failed_jobs")).scalar_one()
    exact = retried == jobs and len(ids) == jobs and len(set(ids)) == jobs and left == 0
    if not exact:
        raise AssertionError(f"retried {retried}, {len(ids)} messages ({len(set(ids))} distinct), {left} left stored")
    return {"queued_once": True}
