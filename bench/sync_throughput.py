"""Parts (a) and (d): students/s against an instant upstream, antrian vs a bare Dramatiq actor, and worker RSS.

antrian is timed end to end as a user gets it: from POST /api/sync-runs until the run is
'finished', so its fan-out is included. The bare baseline gets all its messages enqueued first
and is timed from its first stored student to its last (database timestamps), without enqueueing.
"""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import Engine, text

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.cli.demo import FIRST_IDPERSON

from . import common, probes
from .bare_actor import ACTOR as BARE_ACTOR
from .bare_actor import QUEUE as BARE_QUEUE

#: Messages per confirmed batch when enqueueing the baseline's messages (as antrian's fan-out does).
ENQUEUE_BATCH = 2000


def run(engine: Engine, *, students: int, processes: int, threads: int) -> dict:
    common.clear_data(engine)
    common.seed(engine, students)
    timeout = 120 + students / 50
    try:
        upstream = common.start_school_api()
        web = common.start_sync_api()
        upstream_ms = probes.upstream_latency_ms(upstream, requests_count=50)
        antrian = _antrian(engine, web, upstream, students=students, processes=processes, threads=threads,
                           timeout=timeout)
        _forget_payments(engine)
        bare = _bare(engine, upstream, students=students, processes=processes, threads=threads, timeout=timeout)
    finally:
        common.stop_all()
        common.purge_queues((*common.SYNC_QUEUES, BARE_QUEUE))
    return {
        "students": students,
        "processes": processes,
        "threads": threads,
        "upstream_latency": upstream_ms,
        "antrian": antrian,
        "bare": bare,
        "ratio_end_to_end": round(antrian["rate_per_s"] / bare["rate_per_s"], 3),
        "ratio_processing_window": round(antrian["window_rate_per_s"] / bare["rate_per_s"], 3),
    }


def _antrian(engine: Engine, web: str, upstream: str, *, students: int, processes: int, threads: int,
             timeout: float) -> dict:
    """A real sync run through sync-api and sync-worker; samples worker memory, DB sessions and CPU meanwhile."""
    worker = common.start_sync_worker(upstream, processes=processes, threads=threads)
    common.log(f"(a) antrian: sync run over {students} students, sync-worker {processes}x{threads}")
    with probes.MemorySampler(worker.pid, processes=processes) as memory, probes.DbActivitySampler(engine) as db, \
            probes.CpuMeter() as cpu:
        started = time.perf_counter()
        run_id, post_s = common.post_sync_run(web)
        row = common.wait_for_run(engine, run_id, timeout=timeout)
        wall = time.perf_counter() - started
        memory.sample()
    worker.stop()
    if row["processed"] != students or row["failed"]:
        raise RuntimeError(f"run {run_id} ended with processed={row['processed']} failed={row['failed']}")
    window = common.synced_window(engine)
    fanouts = common.fanout_lines(worker)
    result = {
        "run_id": run_id,
        "post_ms": round(post_s * 1000, 1),
        "wall_s": round(wall, 2),
        "rate_per_s": round(students / wall, 1),
        "db_started_to_finished_s": round(row["seconds"], 2),
        "window_s": round(float(window.seconds), 2),
        "window_rate_per_s": round(window.synced / float(window.seconds), 1),
        "fanout": fanouts[-1] if fanouts else None,
        "memory": memory.report(),
        "db_sessions": db.report(),
        **cpu.report(),
    }
    common.log(f"(a) antrian: {result['rate_per_s']}/s end to end ({wall:.1f}s)")
    return result


def _forget_payments(engine: Engine) -> None:
    """Back to students without pembayaran, so the baseline's count of stored rows starts at zero."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE students SET pembayaran = NULL, pembayaran_synced_at = NULL"))
    common.vacuum(engine, "students")


def _bare(engine: Engine, upstream: str, *, students: int, processes: int, threads: int, timeout: float) -> dict:
    """Enqueue every baseline message first, then start the bare workers and time their work."""
    enqueue_s = _enqueue_bare(students)
    common.log(f"(a) bare: {students} messages enqueued in {enqueue_s:.1f}s; starting dramatiq {processes}x{threads}")
    worker = common.Service(
        "bare-dramatiq",
        [str(common.BIN / "python"), "-m", "dramatiq", "bench.bare_actor",
         "--processes", str(processes), "--threads", str(threads)],
        common.base_env(UPSTREAM_BASE_URL=upstream),
    ).start()
    with probes.MemorySampler(worker.pid, processes=processes) as memory, probes.DbActivitySampler(engine) as db, \
            probes.CpuMeter() as cpu:
        started = time.perf_counter()
        common.wait_until(lambda: common.synced_window(engine).synced >= students, timeout=timeout, interval=0.25,
                          what=f"the bare baseline to store {students} students")
        wall = time.perf_counter() - started
        memory.sample()
    worker.stop()
    window = common.synced_window(engine)
    result = {
        "enqueue_s": round(enqueue_s, 2),
        "wall_from_worker_start_s": round(wall, 2),
        "window_s": round(float(window.seconds), 2),
        "rate_per_s": round(window.synced / float(window.seconds), 1),
        "memory": memory.report(),
        "db_sessions": db.report(),
        **cpu.report(),
    }
    common.log(f"(a) bare: {result['rate_per_s']}/s over its processing window ({result['window_s']}s)")
    return result


def _enqueue_bare(students: int) -> float:
    """Declare the baseline's queues the way Dramatiq does, then publish its messages with confirms."""
    broker = RabbitmqBroker(url=common.BROKER_URL)
    try:
        broker.declare_queue(BARE_QUEUE, ensure=True)
    finally:
        broker.close()
    common.purge_queues((BARE_QUEUE,))
    started = time.perf_counter()
    bodies = [
        dramatiq.Message(queue_name=BARE_QUEUE, actor_name=BARE_ACTOR, args=(FIRST_IDPERSON + n,), kwargs={},
                         options={}).encode()
        for n in range(students)
    ]
    with ConfirmedPublisher(common.BROKER_URL) as publisher:
        for start in range(0, students, ENQUEUE_BATCH):
            publisher.publish_batch(BARE_QUEUE, bodies[start:start + ENQUEUE_BATCH])
    return time.perf_counter() - started
