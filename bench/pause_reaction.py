"""Part (k): how soon a pause holds and a resume takes effect across 4 sync-worker processes.

A sync run goes on against a school API answering in a few milliseconds while ``sync-pembayaran`` is paused and
resumed from the API several times. All times are PostgreSQL's: a pause's ``paused_at`` (its commit), each
student's ``finished_at``. A pause has held when the last student finished; its reaction is that moment minus
``paused_at``. A resume's reaction is the first student finished after it minus its moment. The floor to compare
with is the workers' poll interval (:data:`antrian.runtime.pauses.POLL_INTERVAL_S`): a worker sees a pause on its
next read. At the end the run must finish with every student counted once.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime

import requests
from sqlalchemy import Engine, text

from antrian.messages import SYNC_QUEUE
from antrian.runtime.pauses import POLL_INTERVAL_S

from . import common

#: Seconds a pause is left before it is measured: a few polls, and the job each thread may be running.
HOLD_S = 4.0
#: Seconds the queue runs between two pauses.
RUN_S = 1.5


def run(engine: Engine, *, students: int, processes: int, threads: int, cycles: int) -> dict:
    common.clear_data(engine)
    common.seed(engine, students)
    web = None
    try:
        upstream = common.start_school_api(latency_ms=2)
        web = common.start_sync_api()
        common.start_sync_worker(upstream, processes=processes, threads=threads)
        run_id, _ = common.post_sync_run(web)
        common.wait_until(lambda: _finished(engine, run_id) >= 200, timeout=120, what="the run's first students")
        pauses, resumes = [], []
        for cycle in range(cycles):
            time.sleep(RUN_S)
            paused_at = datetime.fromisoformat(_call(web, "pause")["paused_at"])
            time.sleep(HOLD_S)
            last, after = _last_finished(engine, run_id), _finished(engine, run_id)
            time.sleep(1.0)
            if _finished(engine, run_id) != after:
                raise RuntimeError(f"cycle {cycle}: students still finished {HOLD_S + 1:g}s after the pause")
            pauses.append(max(0.0, (last - paused_at).total_seconds()))
            resumed_at = _call_and_now(engine, web, "resume")
            first = common.wait_until(lambda at=resumed_at: _first_finished_after(engine, run_id, at), timeout=60,
                                      what=f"a student after resume {cycle}")
            resumes.append(max(0.0, (first - resumed_at).total_seconds()))
            common.log(f"pause {cycle}: held after {pauses[-1]:.2f}s; resumed after {resumes[-1]:.2f}s")
        final = common.wait_for_run(engine, run_id, timeout=120 + students / 50)
    finally:
        _call_quietly(web, "resume")
        common.stop_all()
    exact = final["processed"] == students and final["failed"] == 0
    return {
        "students": students, "processes": processes, "threads": threads, "cycles": cycles,
        "poll_interval_s": POLL_INTERVAL_S,
        "pause_s": {"median": round(statistics.median(pauses), 3), "max": round(max(pauses), 3),
                    "all": [round(p, 3) for p in pauses]},
        "resume_s": {"median": round(statistics.median(resumes), 3), "max": round(max(resumes), 3),
                     "all": [round(r, 3) for r in resumes]},
        "pause_max_per_poll": round(max(pauses) / POLL_INTERVAL_S, 2),
        "resume_max_per_poll": round(max(resumes) / POLL_INTERVAL_S, 2),
        "run_exact": exact, "processed": final["processed"], "failed": final["failed"],
    }


def _call(web: str, action: str) -> dict:
    response = requests.post(f"{web}/api/queues/{SYNC_QUEUE}/{action}", headers=common.AUTH, timeout=30)
    response.raise_for_status()
    return response.json()


def _call_quietly(web: str | None, action: str) -> None:
    if web is None:
        return
    try:
        _call(web, action)
    except requests.RequestException:
        pass


def _call_and_now(engine: Engine, web: str, action: str) -> datetime:
    """Call ``action`` and return PostgreSQL's clock right after its commit."""
    _call(web, action)
    with engine.connect() as connection:
        return connection.execute(text("SELECT clock_timestamp()")).scalar_one()


def _finished(engine: Engine, run_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM sync_items WHERE run_id = :r AND finished_at IS NOT NULL"),
                                  {"r": run_id}).scalar_one()


def _last_finished(engine: Engine, run_id: int) -> datetime:
    with engine.connect() as connection:
        return connection.execute(text("SELECT max(finished_at) FROM sync_items WHERE run_id = :r"),
                                  {"r": run_id}).scalar_one()


def _first_finished_after(engine: Engine, run_id: int, moment: datetime) -> datetime | None:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT min(finished_at) FROM sync_items WHERE run_id = :r AND finished_at > :m"),
            {"r": run_id, "m": moment},
        ).scalar_one()


def rows(k: dict, add) -> None:
    """Part (k)'s lines of the table."""
    if "pause_s" not in k:
        return
    setup = f"{k['processes']} sync-worker processes x{k['threads']}, {k['cycles']} pauses"
    poll = k["poll_interval_s"]
    add("k", f"pause holds after: median / max ({setup})", f"{k['pause_s']['median']} / {k['pause_s']['max']} s")
    add("k", f"  max as a multiple of the workers' poll interval ({poll:g} s)", f"{k['pause_max_per_poll']:.2f}",
        "<= 3 (a few seconds)", k["pause_max_per_poll"] <= 3)
    add("k", "resume takes effect after: median / max", f"{k['resume_s']['median']} / {k['resume_s']['max']} s")
    add("k", f"  max as a multiple of the poll interval ({poll:g} s)", f"{k['resume_max_per_poll']:.2f}",
        "<= 3", k["resume_max_per_poll"] <= 3)
    add("k", "the run afterwards: every student once, none failed",
        f"{k['processed']} of {k['students']}, {k['failed']} failed", "exact", k["run_exact"])
