"""Part (c): how long POST /api/sync-runs takes over many students, and how fast the fan-out publishes.

POST latency: sync-api alone (no worker), each run deleted and its fan-out message purged
before the next sample. Fan-out rate: a sync-worker with one process and one thread, so the
fan-out actor runs with no student work beside it (the student messages it publishes wait in
the queue until it is done); read from the fan-out's own log line and cross-checked by
polling sync_runs.fanout_done. Reference: the raw ConfirmedPublisher into a scratch queue.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.cli.demo import FIRST_IDPERSON
from antrian.messages import SYNC_STUDENT_PAYMENT

from . import common, probes

SCRATCH_QUEUE = "bench-scratch"
#: The fan-out's batch size, so the raw reference publishes the same way.
PUBLISH_BATCH = 2000


def run(engine: Engine, *, students: int, samples: int, publish: int) -> dict:
    common.clear_data(engine)
    common.seed(engine, students)
    try:
        web = common.start_sync_api()
        post = _post_latency(engine, web, samples)
        snapshot_ms = _snapshot_query_ms(engine)
        fanout = _fanout(engine, web, students)
    finally:
        common.stop_all()
        common.purge_queues(common.SYNC_QUEUES)
    raw = _raw_publisher(publish)
    return {"students": students, "post": post, "snapshot_query_ms": snapshot_ms, "fanout": fanout,
            "raw_publisher": raw}


def _post_latency(engine: Engine, web: str, samples: int) -> dict:
    common.log(f"(c) POST /api/sync-runs latency, {samples} samples")
    latencies = []
    for _ in range(samples):
        run_id, seconds = common.post_sync_run(web)
        latencies.append(round(seconds * 1000, 1))
        _forget_run(engine, run_id)
    return {"samples_ms": latencies, "median_ms": common.median(latencies), "max_ms": max(latencies),
            "first_ms": latencies[0]}


def _forget_run(engine: Engine, run_id: int) -> None:
    """Delete a run nobody works on and purge its fan-out message, so the next POST may start one."""
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM sync_runs WHERE id = :id"), {"id": run_id})
    common.purge_queues(common.SYNC_QUEUES)


def _snapshot_query_ms(engine: Engine) -> float:
    """Median time of the run's snapshot query alone (count and max id of students), for where time goes."""
    times = []
    with engine.connect() as connection:
        for _ in range(5):
            started = time.perf_counter()
            connection.execute(text("SELECT count(*), coalesce(max(id), 0) FROM students")).one()
            times.append((time.perf_counter() - started) * 1000)
    return round(common.median(times), 1)


def _fanout(engine: Engine, web: str, students: int) -> dict:
    """One real run's fan-out in a 1-process, 1-thread sync-worker: nothing else runs while it publishes."""
    upstream = common.start_school_api()
    worker = common.start_sync_worker(upstream, processes=1, threads=1)
    common.log(f"(c) fan-out of {students} students in sync-worker 1x1")
    with probes.CpuMeter() as cpu:
        started = time.perf_counter()
        run_id, _ = common.post_sync_run(web)
        common.wait_for_run(engine, run_id, timeout=60 + students / 500, field="fanout_done")
        observed = time.perf_counter() - started
    lines = common.wait_until(lambda: [f for f in common.fanout_lines(worker) if f["run_id"] == run_id],
                              timeout=15, what="the fan-out's log line")
    worker.stop()
    line = lines[-1]
    if line["messages"] != students:
        raise RuntimeError(f"the fan-out published {line['messages']} messages for {students} students")
    common.log(f"(c) fan-out: {line['rate_per_s']}/s by its log line, POST to fanout_done {observed:.1f}s")
    return {**line, "post_to_fanout_done_s": round(observed, 2),
            "post_to_fanout_done_rate_per_s": round(students / observed, 1), **cpu.report()}


def _raw_publisher(count: int) -> dict:
    """The ConfirmedPublisher alone: ``count`` encoded student messages to a scratch queue, batches of 2,000."""
    common.log(f"(c) raw ConfirmedPublisher: {count} messages")
    common.delete_queues((SCRATCH_QUEUE,))
    connection = common.amqp_connection()
    try:
        connection.channel().queue_declare(SCRATCH_QUEUE, durable=True)
    finally:
        connection.close()
    started = time.perf_counter()
    bodies = [SYNC_STUDENT_PAYMENT.message(FIRST_IDPERSON + n, 0).encode() for n in range(count)]
    encode_s = time.perf_counter() - started
    try:
        with ConfirmedPublisher(common.BROKER_URL) as publisher, probes.CpuMeter() as cpu:
            started = time.perf_counter()
            for start in range(0, count, PUBLISH_BATCH):
                publisher.publish_batch(SCRATCH_QUEUE, bodies[start:start + PUBLISH_BATCH])
            seconds = time.perf_counter() - started
        depth = common.queue_depth(SCRATCH_QUEUE)
    finally:
        common.delete_queues((SCRATCH_QUEUE,))
    if depth != count:
        raise RuntimeError(f"the scratch queue holds {depth} messages, not {count}")
    common.log(f"(c) raw ConfirmedPublisher: {count / seconds:.0f}/s")
    return {"messages": count, "seconds": round(seconds, 2), "rate_per_s": round(count / seconds, 1),
            "encode_per_s": round(count / encode_s, 1), **cpu.report()}
