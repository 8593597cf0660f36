"""Part (o): the scaling curve: sync and booking rates, and memory per process, at 1, 2 and 4 processes, plotted
(issue 18, part 6), so that an operator can size replicas.

Sync: a sync run of ``o_sync_students`` students through the real sync-api and sync-worker against the instant
development school API, timed as in part (a) from POST /api/sync-runs until the run is 'finished' (its fan-out
included), with sync-worker at 1, 2 and 4 processes of ``o_sync_threads`` threads each. 8 threads, not make run's
16: every worker process keeps a pool of one connection per thread (antrian.runtime.workers sets DB_POOL_SIZE to
``--threads``) plus up to 8 overflow and its small engines (pauses, wait time, failed jobs), and 4 x 16 threads
with sync-api and the bench beside them would come near PostgreSQL's ``max_connections`` of 100; 4 x 8 stays
well under it (the peak number of the bench database's sessions is reported at every point). make run's own
shape, 1 process x ``o_sync_make_run_threads`` (16) threads, is measured too and marked apart.

Bookings: sync-api (gunicorn, gthread) at 1, 2 and 4 worker processes of ``o_booking_threads`` threads each, set
with ``GUNICORN_CMD_ARGS`` (which overrides sync_api/gunicorn_conf.py's ``workers = 2, threads = 8``), loaded
closed-loop by one ``hey -c o_booking_concurrency`` without a rate limit for ``o_booking_seconds`` against
POST /api/bookings on one tour of a large quota (a fresh tour per point), after a short warm-up: the highest rate
it sustains. Every booking updates that tour's row: the popular-tour case, where bookings queue on one row lock
whatever the number of processes. Reported: bookings made per second (201 answers / duration), p50 and p99. Each
gunicorn worker's
relay thread publishes the outbox to the ``emails`` queue; no mailer runs (sending invoices is part (f) and (n)'s
business), and the queue is purged after each point. hey runs on the same machine and takes CPU of its own.

Memory: the peak RSS of every process of the service's process group (probes.MemorySampler): each worker process,
and the main process (Dramatiq's parent, gunicorn's master) apart, and Dramatiq's metrics fork (its Prometheus
exposition process). RSS counts pages shared after the fork in every process, so the sum over processes overstates
what the group holds. CPU: the machine's busy share during each point (probes.CpuMeter), the share of it taken by
processes outside the bench (anything else running on the machine: compare points only when it is small), and the
service's own CPU per student or booking, which shows what more processes cost per item.

No targets: the machine has 2 cores, and PostgreSQL, RabbitMQ, the school API (or hey) run on the same ones, so
the curve is expected to flatten past 2 processes (or before: a single process with threads already uses more
than one core's worth of the machine, counting the servers). The figures say how the rate grows with processes on
this machine; on a bigger one the flat part starts later. The plot goes to bench/results/scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from sqlalchemy import Engine, text

from . import bookings_latency, common, probes

#: Sizes of the full suite and of ``--small`` (merged into bench/__main__.py's FULL and SMALL; each becomes an option).
#: o_sync_make_run_threads: the marked point, 1 process x that many threads (0: left out).
FULL: dict = {"o_sync_students": 10_000, "o_sync_threads": 8, "o_sync_make_run_threads": 16,
              "o_booking_seconds": 15, "o_booking_threads": 8, "o_booking_concurrency": 16}
SMALL: dict = {"o_sync_students": 1_000, "o_booking_seconds": 4}

#: The process counts of the curve.
PROCESSES = (1, 2, 4)
#: Seconds of closed-loop POSTs before each booking point is measured (each thread opens its DB connection).
BOOKING_WARMUP_S = 2
PLOT = common.RESULTS_DIR / "scaling.png"


def run(engine: Engine, args: argparse.Namespace) -> dict:
    sizes = {name: getattr(args, name) for name in FULL}
    hey = shutil.which("hey")
    if hey is None:
        raise RuntimeError("hey is not installed: run scripts/ensure-load-tools.sh (make bench does)")
    sync = _sync_curve(engine, students=sizes["o_sync_students"], threads=sizes["o_sync_threads"],
                       make_run_threads=sizes["o_sync_make_run_threads"])
    bookings = _booking_curve(engine, hey, seconds=sizes["o_booking_seconds"], threads=sizes["o_booking_threads"],
                              concurrency=sizes["o_booking_concurrency"])
    result = {"cpus": os.cpu_count(), **sizes, "sync": sync, "bookings": bookings}
    try:
        result["plot"] = str(plot(result, PLOT))
    except Exception as exc:  # noqa: BLE001 - the figures stand without the plot
        common.log(f"(o) plot failed: {type(exc).__name__}: {exc}")
        result["plot_error"] = f"{type(exc).__name__}: {exc}"
    return result


# --------------------------------------------------------------------------- sync


def _sync_curve(engine: Engine, *, students: int, threads: int, make_run_threads: int) -> dict:
    """One sync run per process count (and make run's shape): students/s end to end, memory, CPU, DB sessions."""
    common.clear_data(engine)
    common.seed(engine, students)
    timeout = 120 + students / 20
    shapes = [(processes, threads, False) for processes in PROCESSES]
    if make_run_threads:
        shapes.append((1, make_run_threads, True))
    points = []
    try:
        upstream = common.start_school_api()
        web = common.start_sync_api()
        for processes, shape_threads, make_run in shapes:
            points.append(_sync_point(engine, web, upstream, students=students, processes=processes,
                                      threads=shape_threads, timeout=timeout, make_run=make_run))
    finally:
        common.stop_all()
        common.purge_queues(common.SYNC_QUEUES)
    base = points[0]["rate_per_s"]
    for point in points:
        point["ratio_to_1"] = round(point["rate_per_s"] / base, 2)
    return {"students": students, "threads": threads, "points": points}


def _sync_point(engine: Engine, web: str, upstream: str, *, students: int, processes: int, threads: int,
                timeout: float, make_run: bool) -> dict:
    worker = common.start_sync_worker(upstream, processes=processes, threads=threads)
    common.log(f"(o) sync run over {students} students, sync-worker {processes}x{threads}")
    with probes.MemorySampler(worker.pid, processes=processes) as memory, _Sessions(engine) as sessions, \
            probes.CpuMeter() as cpu:
        started = time.perf_counter()
        run_id, _ = common.post_sync_run(web)
        row = common.wait_for_run(engine, run_id, timeout=timeout)
        wall = time.perf_counter() - started
        memory.sample()
    worker.stop()
    cpu_figures = _cpu(cpu.report(), seconds=wall)
    if row["processed"] != students or row["failed"]:
        raise RuntimeError(f"run {run_id} ended with processed={row['processed']} failed={row['failed']}")
    common.vacuum(engine, "students", "sync_items")
    point = {"processes": processes, "threads": threads, "make_run": make_run, "run_id": run_id,
             "wall_s": round(wall, 2), "rate_per_s": round(students / wall, 1),
             "memory": _memory(memory.report()), "db_sessions_max": sessions.max, **cpu_figures,
             "service_cpu_ms_each": round(cpu_figures["cpu_seconds"].get("sync-worker", 0) * 1000 / students, 2)}
    common.log(f"(o) sync {processes}x{threads}: {point['rate_per_s']}/s ({wall:.1f}s), CPU busy"
               f" {point['machine_cpu_busy_percent']}%, worker RSS {point['memory']['worker_max_mb']} MB")
    return point


# --------------------------------------------------------------------------- bookings


def _booking_curve(engine: Engine, hey: str, *, seconds: int, threads: int, concurrency: int) -> dict:
    """One closed-loop load per gunicorn worker count: bookings/s, p50 and p99, memory, CPU."""
    common.clear_bookings(engine)
    points = []
    try:
        for processes in PROCESSES:
            points.append(_booking_point(engine, hey, processes=processes, threads=threads, seconds=seconds,
                                         concurrency=concurrency))
    finally:
        common.stop_all()
        common.clear_bookings(engine)
    base = points[0]["rate_per_s"]
    for point in points:
        point["ratio_to_1"] = round(point["rate_per_s"] / base, 2)
    return {"seconds": seconds, "threads": threads, "concurrency": concurrency, "points": points}


def _booking_point(engine: Engine, hey: str, *, processes: int, threads: int, seconds: int,
                   concurrency: int) -> dict:
    web = common.start_sync_api(GUNICORN_CMD_ARGS=f"--workers {processes} --threads {threads}")
    api = next(s for s in reversed(common.running()) if s.name == f"sync-api-{web.rsplit(':', 1)[1]}")
    body = json.dumps({"tour_id": bookings_latency.create_tour(web, "Scaling tour"), **bookings_latency.BOOKING})
    common.log(f"(o) POST /api/bookings closed loop, sync-api {processes}x{threads}, hey -c {concurrency}, {seconds}s")
    with probes.MemorySampler(api.pid, processes=processes) as memory:
        _Hey(hey, web, body, label=f"warmup-{processes}", seconds=BOOKING_WARMUP_S, concurrency=concurrency).wait()
        _wait_outbox_empty(engine)
        common.purge_queues(common.EMAIL_QUEUES)
        load = _Hey(hey, web, body, label=f"load-{processes}", seconds=seconds, concurrency=concurrency)
        # Entered after hey started, so that CpuMeter names hey's CPU.
        with _Sessions(engine) as sessions, probes.CpuMeter() as cpu:
            started = time.perf_counter()
            rows = load.wait()
            measured_s = time.perf_counter() - started
        memory.sample()
        drain_s = _wait_outbox_empty(engine)
    api.stop()
    common.purge_queues(common.EMAIL_QUEUES)
    figures = bookings_latency.figures(rows, ticks=len(rows))
    made = figures["status_codes"].get("201", 0)
    point = {"processes": processes, "threads": threads, "rate_per_s": round(made / seconds, 1),
             "p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"], "max_ms": figures["max_ms"],
             "answered": figures["answered"], "status_codes": figures["status_codes"], "outbox_empty_after_s": drain_s,
             "memory": _memory(memory.report()), "db_sessions_max": sessions.max,
             **_cpu(cpu.report(), seconds=measured_s)}
    point["service_cpu_ms_each"] = round(point["cpu_seconds"].get("sync-api", 0) * 1000 / max(made, 1), 2)
    common.log(f"(o) bookings {processes}x{threads}: {point['rate_per_s']}/s, p50 {point['p50_ms']} ms, p99"
               f" {point['p99_ms']} ms, CPU busy {point['machine_cpu_busy_percent']}%,"
               f" worker RSS {point['memory']['worker_max_mb']} MB")
    return point


class _Hey:
    """One closed-loop ``hey -c concurrency`` (no rate limit) for ``seconds``, started at once; :meth:`wait` returns
    its answered requests (``bookings_latency.parse_hey_csv``)."""

    def __init__(self, hey: str, web: str, body: str, *, label: str, seconds: int, concurrency: int) -> None:
        argv = [hey, "-z", f"{seconds}s", "-c", str(concurrency), "-t", "10", "-o", "csv", "-m", "POST",
                "-T", "application/json", "-H", f"Authorization: Bearer {common.API_TOKEN}", "-d", body,
                f"{web}/api/bookings"]
        self.seconds = seconds
        self.service = common.Service(f"hey-scaling-{label}", argv, common.base_env()).start()

    def wait(self) -> list:
        try:
            returncode = self.service.process.wait(self.seconds + 60)
        finally:
            self.service.stop()
        if returncode != 0:
            raise RuntimeError(f"{self.service.name} exited with {returncode}:\n{self.service.log()[-2000:]}")
        return bookings_latency.parse_hey_csv(self.service.log())


def _wait_outbox_empty(engine: Engine, timeout: float = 60) -> float:
    started = time.perf_counter()

    def empty() -> bool:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0

    common.wait_until(empty, timeout=timeout, interval=0.05, what="an empty outbox")
    return round(time.perf_counter() - started, 2)


# --------------------------------------------------------------------------- probes


def _memory(rows: list[dict]) -> dict:
    """Peak RSS in MB of the main process, of each worker process, of any other (fork), and their sum."""
    workers = [row["max_rss_mb"] for row in rows if row["role"].startswith("worker")]
    main = next((row["max_rss_mb"] for row in rows if row["role"] == "main"), 0.0)
    forks = [row["max_rss_mb"] for row in rows if row["role"] == "fork"]
    return {"main_mb": main, "workers_mb": workers, "forks_mb": forks,
            "worker_mean_mb": round(sum(workers) / len(workers), 1) if workers else 0.0,
            "worker_max_mb": max(workers, default=0.0), "total_mb": round(main + sum(workers) + sum(forks), 1),
            "processes": rows}


def _cpu(report: dict, *, seconds: float) -> dict:
    """The machine's busy share, and the share of all CPUs taken by load generators (hey) and by processes outside
    the bench ("other": whatever else ran on the machine meanwhile)."""
    capacity = seconds * (os.cpu_count() or 1) / 100
    by_who = report["cpu_seconds"]
    hey = sum(value for who, value in by_who.items() if who.startswith("hey"))
    return {**{key: report[key] for key in ("machine_cpu_busy_percent", "machine_cpu_steal_percent",
                                            "loadavg_1m_before", "cpu_seconds")},
            "hey_cpu_percent": round(hey / capacity, 1),
            "other_cpu_percent": round(by_who.get("other", 0) / capacity, 1)}


class _Sessions(probes.Sampler):
    """The largest number of the bench database's sessions seen (every state): how near max_connections it came."""

    name = "sessions-sampler"

    def __init__(self, engine: Engine, *, interval: float = 0.5) -> None:
        super().__init__(interval=interval)
        self.engine = engine
        self.max = 0

    def sample(self) -> None:
        with self.engine.connect() as connection:
            count = connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend'")).scalar_one()
        self.max = max(self.max, count)


# --------------------------------------------------------------------------- plot


def plot(result: dict, png) -> object:
    """Two columns (sync, bookings): the rate against processes above, peak RSS per process below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sync, bookings = result["sync"], result["bookings"]
    curve = [p for p in sync["points"] if not p["make_run"]]
    marked = [p for p in sync["points"] if p["make_run"]]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    panels = (
        (axes[:, 0], curve, "students/s", f"sync: students/s end to end, {sync['students']:,} students\n"
                                          f"sync-worker N processes x {sync['threads']} threads",
         "Dramatiq main"),
        (axes[:, 1], bookings["points"], "bookings/s", f"bookings: POST /api/bookings closed loop, hey -c "
                                                       f"{bookings['concurrency']}, {bookings['seconds']} s\n"
                                                       f"sync-api (gunicorn) N workers x {bookings['threads']} threads",
         "gunicorn master"),
    )
    for (top, bottom), points, unit, title, main_label in panels:
        xs = [p["processes"] for p in points]
        rates = [p["rate_per_s"] for p in points]
        top.plot(xs, rates, "o-", color="tab:blue", label=f"measured ({points[0]['threads']} threads/process)")
        top.plot(xs, [rates[0] * x for x in xs], ":", color="grey", label="linear from 1 process")
        for point in points:
            top.annotate(f"{point['rate_per_s']:.0f}/s\nCPU {point['machine_cpu_busy_percent']:.0f}%"
                         f" (others {point['other_cpu_percent']:.0f}%)",
                         (point["processes"], point["rate_per_s"]), textcoords="offset points", xytext=(6, -22),
                         fontsize=8)
        if unit == "students/s":
            for point in marked:
                top.plot([point["processes"]], [point["rate_per_s"]], "*", color="tab:red", markersize=13,
                         label=f"make run: 1 x {point['threads']} threads ({point['rate_per_s']:.0f}/s)")
        handles, labels = top.get_legend_handles_labels()
        if unit == "bookings/s":
            p99 = top.twinx()
            p99.plot(xs, [p["p99_ms"] for p in points], "s--", color="tab:orange", label="p99 latency, ms (right)")
            p99.set_ylabel("p99 latency, ms", color="tab:orange")
            p99.set_ylim(0, max(p["p99_ms"] for p in points) * 1.3)
            more_handles, more_labels = p99.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        top.set_ylim(0, max(rates[0] * xs[-1], *rates) * 1.1)
        top.set_ylabel(unit)
        top.set_title(title, fontsize=10)
        top.grid(alpha=0.3)
        top.legend(handles, labels, loc="upper left", fontsize=8)
        width = 0.35
        bottom.bar([x - width / 2 for x in xs], [p["memory"]["worker_mean_mb"] for p in points], width,
                   color="tab:blue", label="per worker process (mean of peaks)")
        bottom.bar([x + width / 2 for x in xs], [p["memory"]["main_mb"] for p in points], width,
                   color="tab:grey", label=main_label)
        forks = [sum(p["memory"]["forks_mb"]) for p in points]
        if any(forks):
            bottom.bar([x + width / 2 for x in xs], forks, width, bottom=[p["memory"]["main_mb"] for p in points],
                       color="lightgrey", hatch="//", label="its metrics fork")
        for point, fork in zip(points, forks, strict=True):
            memory = point["memory"]
            bottom.annotate(f"{memory['worker_mean_mb']:.0f}", (point["processes"] - width / 2,
                            memory["worker_mean_mb"]), ha="center", va="bottom", fontsize=8)
            bottom.annotate(f"{memory['main_mb']:.0f}" + (f" + {fork:.0f}" if fork else ""),
                            (point["processes"] + width / 2, memory["main_mb"] + fork), ha="center", va="bottom",
                            fontsize=8)
        bottom.set_ylim(0, max(max(p["memory"]["worker_mean_mb"], p["memory"]["main_mb"] + fork)
                               for p, fork in zip(points, forks, strict=True)) * 1.5)
        bottom.set_ylabel("peak RSS, MB")
        bottom.set_xlabel("processes")
        bottom.set_xticks(list(PROCESSES))
        bottom.set_xlim(0.5, 5.2)
        bottom.grid(alpha=0.3, axis="y")
        bottom.legend(loc="upper left", fontsize=8, ncol=2)
    figure.suptitle(f"antrian scaling on this machine ({result['cpus']} CPUs, PostgreSQL and RabbitMQ on the same"
                    " cores): rate and memory per process", fontsize=11)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    common.log(f"(o) plot written to {png}")
    return png


# --------------------------------------------------------------------------- table


def rows(result: dict, add) -> None:
    """The part's rows of the table: ``add(part, what, value, target="", ok=None)``."""
    if "sync" not in result:
        return
    sync, bookings = result["sync"], result["bookings"]
    add("o", f"sync run, {sync['students']:,} students, POST->finished, instant upstream: students/s (x 1 process);",
        "")
    add("o", "  ... peak RSS MB per worker / main + metrics fork; sync-worker CPU ms per student;", "")
    add("o", "  ... machine CPU busy (share of it outside the bench); most DB sessions", "")
    for point in sync["points"]:
        memory = point["memory"]
        add("o", f"  sync-worker {_shape(point, 'process')}{', as make run starts it' if point['make_run'] else ''}",
            f"{point['rate_per_s']:.0f}/s (x{point['ratio_to_1']:.2f}); {_workers(memory)} / {_main(memory)}"
            f" MB; {point['service_cpu_ms_each']:.1f} ms; {point['machine_cpu_busy_percent']:.0f}%"
            f" ({point['other_cpu_percent']:.0f}%);"
            f" {point['db_sessions_max']}", "(info)")
    add("o", f"POST /api/bookings, one hey -c {bookings['concurrency']}, closed loop, {bookings['seconds']}s:"
             " bookings/s (x 1 process); p50 / p99;", "")
    add("o", "  ... peak RSS MB per worker / master; sync-api CPU ms per booking;", "")
    add("o", "  ... machine CPU busy (share of it: hey; outside the bench); answers other than 201", "")
    for point in bookings["points"]:
        memory = point["memory"]
        non_201 = point["answered"] - point["status_codes"].get("201", 0)
        add("o", f"  sync-api (gunicorn) {_shape(point, 'worker')}",
            f"{point['rate_per_s']:.0f}/s (x{point['ratio_to_1']:.2f}); {point['p50_ms']:.0f} / {point['p99_ms']:.0f}"
            f" ms; {_workers(memory)} / {memory['main_mb']:.0f} MB; {point['service_cpu_ms_each']:.1f} ms;"
            f" {point['machine_cpu_busy_percent']:.0f}%"
            f" ({point['hey_cpu_percent']:.0f}%; {point['other_cpu_percent']:.0f}%); {non_201}", "(info)")
    add("o", f"the scaling plot ({result['cpus']} CPUs: the curves are expected to flatten past 2 processes)",
        result.get("plot") or f"not drawn: {result.get('plot_error')}", "(info)")


def _shape(point: dict, unit: str) -> str:
    processes = point["processes"]
    return f"{processes} {unit}{'es' if unit == 'process' and processes > 1 else 's' if processes > 1 else ''}" \
           f" x {point['threads']} threads"


def _main(memory: dict) -> str:
    return " + ".join(f"{value:.0f}" for value in (memory["main_mb"], *memory["forks_mb"]))


def _workers(memory: dict) -> str:
    """Each worker process's peak RSS in MB: "98" once (with "x N") when they are within 1 MB, else each."""
    values = memory["workers_mb"]
    if values and max(values) - min(values) < 1:
        return f"{values[0]:.0f}" + (f" (x{len(values)})" if len(values) > 1 else "")
    return ", ".join(f"{value:.0f}" for value in values)
