"""Part (b): with a slow upstream, does a run finish close to the bound students × latency / concurrency?

A sync run through sync-api and sync-worker against dev-school-api --latency-ms; wall time
from POST /api/sync-runs until the run is 'finished', divided by that bound.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

from . import common, probes


def run(engine: Engine, *, students: int, processes: int, threads: int, latency_ms: float) -> dict:
    concurrency = processes * threads
    bound = students * latency_ms / 1000 / concurrency
    common.clear_data(engine)
    common.seed(engine, students)
    try:
        upstream = common.start_school_api(latency_ms=latency_ms)
        web = common.start_sync_api()
        upstream_ms = probes.upstream_latency_ms(upstream, requests_count=8)
        worker = common.start_sync_worker(upstream, processes=processes, threads=threads)
        common.log(f"(b) sync run over {students} students, {latency_ms:g} ms upstream, C={processes}x{threads}"
                   f" (bound {bound:.1f}s)")
        with probes.CpuMeter() as cpu, probes.DbActivitySampler(engine) as db:
            started = time.perf_counter()
            run_id, post_s = common.post_sync_run(web)
            row = common.wait_for_run(engine, run_id, timeout=120 + bound * 3)
            wall = time.perf_counter() - started
        worker.stop()
        fanouts = common.fanout_lines(worker)
    finally:
        common.stop_all()
        common.purge_queues(common.SYNC_QUEUES)
    if row["processed"] != students or row["failed"]:
        raise RuntimeError(f"run {run_id} ended with processed={row['processed']} failed={row['failed']}")
    result = {
        "students": students,
        "latency_ms": latency_ms,
        "processes": processes,
        "threads": threads,
        "concurrency": concurrency,
        "bound_s": round(bound, 2),
        "wall_s": round(wall, 2),
        "db_started_to_finished_s": round(row["seconds"], 2),
        "ratio": round(wall / bound, 3),
        "upstream_latency": upstream_ms,
        "measured_bound_s": round(students * upstream_ms["keep_alive_ms"] / 1000 / concurrency, 2),
        "db_sessions": db.report(),
        "post_ms": round(post_s * 1000, 1),
        "fanout": fanouts[-1] if fanouts else None,
        **cpu.report(),
    }
    common.log(f"(b) wall {wall:.1f}s vs bound {bound:.1f}s: ratio {result['ratio']}")
    return result
