"""Part (j): what ``UPSTREAM_RATE_LIMIT`` costs when it does not bind, with part (a)'s harness.

The same sync run (POST /api/sync-runs until 'finished', instant development school API, real sync-api and
sync-worker) is timed three ways in one go: no limit, a limit far above the achieved rate (every call still takes
a token, leases reserved in PostgreSQL), and a limit at twice the unlimited rate (leases a little larger than the
demand, so ``tat`` moves noticeably). Each way runs ``repeats`` times, in an order that turns each round so that
a drift of the machine does not favour one; the median of each is compared with the unlimited one. Target: the
far limit at most 5% slower. The workers' own token counts (``antrian_rate_limit_wait_seconds_count``) show that
the limited runs did go through the limiter; the cost of one token in process, timed alone, says how much of a
difference between the runs can be the limiter's.
"""

from __future__ import annotations

import time
from dataclasses import replace

import requests
from sqlalchemy import Engine, text

from antrian.config import load_settings
from antrian.rate_limit import RateLimiter

from . import common

#: The ways, in the first round's order ("near" needs the unlimited rate measured first).
WAYS = ("none", "far", "near")


def run(engine: Engine, *, students: int, processes: int, threads: int, repeats: int, far_limit: float) -> dict:
    common.clear_data(engine)
    common.seed(engine, students)
    timeout = 120 + students / 50
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    tokens: dict[str, list[float]] = {way: [] for way in WAYS}
    near_limit = 0.0
    try:
        upstream = common.start_school_api()
        web = common.start_sync_api()
        for round_ in range(repeats):
            for way in WAYS[round_ % len(WAYS):] + WAYS[:round_ % len(WAYS)]:
                if way == "near" and not near_limit:
                    near_limit = round(2 * rates["none"][0])
                limit = {"none": None, "far": far_limit, "near": near_limit}[way]
                rate, taken = _one_run(engine, web, upstream, students=students, processes=processes,
                                       threads=threads, limit=limit, timeout=timeout)
                rates[way].append(rate)
                tokens[way].append(taken)
                common.log(f"(j) round {round_ + 1}, limit {'none' if limit is None else f'{limit:g}/s'}: {rate}/s")
    finally:
        common.stop_all()
        common.purge_queues(common.SYNC_QUEUES)
    medians = {way: round(common.median(values), 1) for way, values in rates.items()}
    return {
        "token_cost_us": _token_cost_us(far_limit),
        "students": students,
        "processes": processes,
        "threads": threads,
        "repeats": repeats,
        "far_limit": far_limit,
        "near_limit": near_limit,
        "rates_per_s": rates,
        "median_rate_per_s": medians,
        "tokens_taken": tokens,
        "ratio_far": round(medians["far"] / medians["none"], 3),
        "ratio_near": round(medians["near"] / medians["none"], 3),
    }


def _one_run(engine: Engine, web: str, upstream: str, *, students: int, processes: int, threads: int,
             limit: float | None, timeout: float) -> tuple[float, float]:
    """One sync run through a fresh sync-worker with ``UPSTREAM_RATE_LIMIT`` = ``limit`` (None: unset): students/s
    end to end, and the tokens the worker's processes took."""
    env = {} if limit is None else {"UPSTREAM_RATE_LIMIT": f"{limit:g}"}
    worker = common.start_sync_worker(upstream, processes=processes, threads=threads, **env)
    started = time.perf_counter()
    run_id, _ = common.post_sync_run(web)
    row = common.wait_for_run(engine, run_id, timeout=timeout)
    wall = time.perf_counter() - started
    if row["processed"] != students or row["failed"]:
        raise RuntimeError(f"run {run_id} ended with processed={row['processed']} failed={row['failed']}")
    taken = _tokens(worker.metrics_url)
    worker.stop()
    common.vacuum(engine, "students", "sync_items")
    with engine.begin() as connection:  # the next run starts from the same (empty) budget
        connection.execute(text("DELETE FROM rate_limits"))
    return round(students / wall, 1), taken


def _token_cost_us(far_limit: float, tokens: int = 100_000) -> dict:
    """Microseconds one ``acquire()`` costs in one thread: no limit, and ``far_limit`` (leases in PostgreSQL
    included), with the reservations it made."""
    settings = replace(load_settings({}), database_url=common.DATABASE_URL)
    costs: dict = {}
    for way, rate in (("none", None), ("far", far_limit)):
        limiter = RateLimiter("bench-token-cost", rate, settings=settings)
        statements = 0
        limiter.acquire()
        if limiter._engine is not None:  # count the reservations on the limiter's own connection
            from sqlalchemy import event

            def count(*_args: object) -> None:
                nonlocal statements
                statements += 1

            event.listen(limiter._engine, "before_cursor_execute", count)
        started = time.perf_counter()
        for _ in range(tokens):
            limiter.acquire()
        costs[way] = round((time.perf_counter() - started) / tokens * 1e6, 2)
        costs[f"{way}_reservations"] = statements
        limiter.close()
    return costs


def _tokens(metrics_url: str) -> float:
    total = 0.0
    for line in requests.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("antrian_rate_limit_wait_seconds_count{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rows(j: dict, add) -> None:
    """Part (j)'s lines of the table."""
    if "ratio_far" not in j:
        return
    medians, setup = j["median_rate_per_s"], f"{j['students']} students, {j['processes']}x{j['threads']}"
    runs = ", ".join(f"{rate:g}" for rate in j["rates_per_s"]["none"])
    add("j", f"sync run, no UPSTREAM_RATE_LIMIT ({setup}), median of {j['repeats']}",
        f"{medians['none']:.0f}/s ({runs})")
    for way, label in (("far", f"{j['far_limit']:g}/s (far above)"), ("near", f"{j['near_limit']:g}/s (2x unlimited)")):
        runs = ", ".join(f"{rate:g}" for rate in j["rates_per_s"][way])
        add("j", f"  UPSTREAM_RATE_LIMIT={label}; tokens taken per run",
            f"{medians[way]:.0f}/s ({runs}); {', '.join(f'{t:.0f}' for t in j['tokens_taken'][way])}")
    add("j", "ratio far-above limit / no limit", f"{j['ratio_far']:.3f}", ">= 0.95", j["ratio_far"] >= 0.95)
    add("j", "ratio 2x limit / no limit", f"{j['ratio_near']:.3f}", "(info)")
    cost = j["token_cost_us"]
    add("j", "  one acquire() in process, no limit / far above (reservations per 100,000 tokens)",
        f"{cost['none']} / {cost['far']} us ({cost['far_reservations']})", "(info)")
