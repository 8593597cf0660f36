"""The soak's figures from its ``samples.csv``: growth per process after the warm-up, the plot, the summary.

``samples.csv`` is long: ``elapsed_s, metric, subject, pid, value``; metrics ``rss_mb``, ``fds`` and ``tcp`` per
process (subject: the child of dev/run.py, ``name.N`` for its N-th descendant), ``queue_ready``,
``queue_unacknowledged``, ``queue_delayed``, ``queue_dead_lettered``, ``queue_consumers`` per queue,
``outbox_rows``, ``failed_jobs``, ``db_connections`` and ``bookings`` (all, pending).
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

#: A process life measured for less than this (it was restarted soon after the warm-up) gives no growth figure.
MIN_MEASURED_S = 60.0
#: Targets the summary compares with.
RSS_GROWTH_TARGET_PCT = 10.0
PROCESS_METRICS = ("rss_mb", "fds", "tcp", "cpu_s")
#: dev/run.py's stand-ins keep what they got in memory by design: the targets are for antrian's own processes.
STAND_INS = ("dev-school-api", "dev-payment-gateway", "mail-sink")


def read(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return [{**row, "elapsed_s": float(row["elapsed_s"]), "value": float(row["value"])}
                for row in csv.DictReader(file)]


def _lives(rows: list[dict]) -> dict[tuple[str, str], dict[str, list[tuple[float, float]]]]:
    """(subject, pid) → metric → [(elapsed_s, value)]: one process's life, its samples in order."""
    lives: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["metric"] in PROCESS_METRICS:
            lives[(row["subject"], row["pid"])][row["metric"]].append((row["elapsed_s"], row["value"]))
    return lives


def _ends(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The median of the first and of the last values (up to six, a minute at 10 s; at least one, a third of
    them): one noisy sample moves neither."""
    values = [value for _, value in points]
    count = max(1, min(6, len(values) // 3))
    return statistics.median(values[:count]), statistics.median(values[-count:])


def growth(samples: Path, *, start_s: float, end_s: float, warmup_s: float) -> dict:
    """Per process (subject): RSS growth (%), open files' and TCP connections' growth (count) from ``start_s``
    (the warm-up's end) to ``end_s`` (the load's end). A process started later (restarted) is measured from its
    own warm-up's end; of several lives, the one that grew most is reported; ``db_connections`` likewise."""
    try:
        rows = read(samples)
    except FileNotFoundError:
        return {}
    found: dict[str, dict] = {}
    for (subject, pid), metrics in _lives(rows).items():
        born = min(t for points in metrics.values() for t, _ in points)
        begin = max(start_s, born + warmup_s)
        window = {metric: [(t, v) for t, v in points if begin <= t <= end_s] for metric, points in metrics.items()}
        rss = window.get("rss_mb", [])
        entry = found.setdefault(subject, {"lives": 0, "measured_s": 0.0})
        entry["lives"] += 1
        if len(rss) < 3 or rss[-1][0] - rss[0][0] < MIN_MEASURED_S:
            continue
        first, last = _ends(rss)
        measured = {"pid": int(pid), "measured_s": round(rss[-1][0] - rss[0][0]), "rss_first_mb": round(first, 1),
                    "rss_last_mb": round(last, 1), "rss_growth_pct": round((last - first) / first * 100, 1)}
        for metric in ("fds", "tcp"):
            if len(window.get(metric, [])) >= 3:
                first, last = _ends(window[metric])
                measured[f"{metric}_first"], measured[f"{metric}_growth"] = first, last - first
        if "rss_growth_pct" not in entry or measured["rss_growth_pct"] > entry["rss_growth_pct"]:
            entry.update(measured)
    load_start = start_s - warmup_s
    for (subject, _pid), metrics in _lives(rows).items():  # CPU over the whole load, warm-up included
        cpu = [(t, v) for t, v in metrics.get("cpu_s", []) if load_start <= t <= end_s]
        if len(cpu) >= 2 and end_s > load_start:
            entry = found.setdefault(subject, {"lives": 0, "measured_s": 0.0})
            entry["cpu_pct"] = round(entry.get("cpu_pct", 0.0) + (cpu[-1][1] - cpu[0][1]) / (end_s - load_start)
                                     * 100, 1)
    database = [(row["elapsed_s"], row["value"]) for row in rows
                if row["metric"] == "db_connections" and start_s <= row["elapsed_s"] <= end_s]
    if len(database) >= 3:
        first, last = _ends(database)
        found["postgresql (antrian_soak's connections)"] = {"tcp_first": first, "tcp_growth": last - first,
                                                            "measured_s": round(database[-1][0] - database[0][0])}
    return dict(sorted(found.items()))


def plot(samples: Path, events: Path, png: Path, *, measured_from_s: float, load_window_s: list[float]) -> None:
    """Four panels over the soak's minutes: RSS, open files, TCP connections per process; queues and outbox."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read(samples)
    with events.open(newline="") as file:
        marks = [row for row in csv.DictReader(file) if row["event"] in ("kill", "retry-all")]
    origin = load_window_s[0]

    def minutes(seconds: float) -> float:
        return (seconds - origin) / 60

    figure, axes = plt.subplots(4, 1, figsize=(14, 16), sharex=True)
    subjects = sorted({row["subject"] for row in rows if row["metric"] == "rss_mb"})
    colours = {subject: plt.cm.tab20(index % 20) for index, subject in enumerate(subjects)}
    lives = _lives(rows)
    titles = {"rss_mb": "RSS (MB) per process", "fds": "open files per process",
              "tcp": "TCP connections per process (black: PostgreSQL backends of antrian_soak)"}
    for axis, metric in zip(axes, ("rss_mb", "fds", "tcp"), strict=False):
        labelled: set[str] = set()
        for (subject, _pid), metrics in sorted(lives.items()):
            points = metrics.get(metric, [])
            if not points:
                continue
            axis.plot([minutes(t) for t, _ in points], [v for _, v in points], color=colours[subject], linewidth=1.2,
                      label=None if subject in labelled else subject)
            labelled.add(subject)
        axis.set_title(titles[metric], loc="left")
    database = [(row["elapsed_s"], row["value"]) for row in rows if row["metric"] == "db_connections"]
    axes[2].plot([minutes(t) for t, _ in database], [v for _, v in database], color="black", linewidth=1.5,
                 label="postgresql")
    queue_axis = axes[3]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    depth: dict[tuple[str, float], float] = defaultdict(float)
    for row in rows:
        if row["metric"] in ("queue_ready", "queue_unacknowledged", "queue_delayed"):
            depth[(row["subject"], row["elapsed_s"])] += row["value"]
        elif row["metric"] in ("outbox_rows", "failed_jobs"):
            series[row["metric"].replace("_", " ")].append((row["elapsed_s"], row["value"]))
        elif row["metric"] == "bookings" and row["subject"] == "pending":
            series["bookings pending"].append((row["elapsed_s"], row["value"]))
    for (queue, t), value in sorted(depth.items()):
        series[f"queue {queue} (ready + unacked + delayed)"].append((t, value))
    for name, points in sorted(series.items()):
        queue_axis.plot([minutes(t) for t, _ in points], [v for _, v in points], linewidth=1.2, label=name)
    queue_axis.set_yscale("symlog", linthresh=10)
    queue_axis.set_title("queues, outbox, failed jobs, pending bookings (symlog)", loc="left")
    queue_axis.set_xlabel("minutes since the load started")
    for axis in axes:
        axis.axvspan(minutes(min(origin, measured_from_s)), minutes(measured_from_s), color="0.9", zorder=0)
        axis.axvline(minutes(load_window_s[1]), color="0.3", linewidth=1)
        for mark in marks:
            style = {"color": "red", "linestyle": "--"} if mark["event"] == "kill" else {"color": "green",
                                                                                       "linestyle": ":"}
            axis.axvline(minutes(float(mark["elapsed_s"])), linewidth=0.9, **style)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    top = axes[0]
    for mark in marks:
        if mark["event"] == "kill":
            top.annotate(mark["detail"].split(" (")[0], (minutes(float(mark["elapsed_s"])), 1.0),
                         xycoords=("data", "axes fraction"), rotation=90, fontsize=7, va="top", ha="right",
                         color="red")
    figure.suptitle("make soak: grey = warm-up (left out of the growth figures), red dashed = a worker killed, "
                    "green dotted = retry-all, grey line = load stopped", fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def summary_text(result: dict) -> str:
    lines = ["", "== make soak =="]
    if "error" in result:
        lines.append(f"FAILED TO RUN: {result['error']}")
    config = result.get("config", {})
    load = result.get("load_seconds")
    if load:
        lines.append(f"load: {load / 60:.1f} min; results in {result['folder']}")
        totals = result.get("totals", {})
        lines.append(f"bookings: {totals.get('booked', 0)} made, {result.get('bookings_per_s')}/s achieved "
                     f"(target {config.get('booking_rate')}/s); other answers: "
                     + ", ".join(f"{k} {v}" for k, v in totals.items() if k != "booked"))
        runs = result.get("runs", [])
        seconds = [run["seconds"] for run in runs if run.get("status") == "finished"]
        lines.append(f"sync runs completed: {len(seconds)} of {len(runs)}"
                     + (f", {min(seconds):.0f}-{max(seconds):.0f} s each" if seconds else ""))
        lines.append(f"drained {result.get('drain_seconds')} s after the load stopped (a backlog left then is "
                     f"drained before the checks)")
        lines.append(f"failed-job retries: {len(result.get('retries', []))}, jobs retried "
                     f"{sum(r.get('retried', 0) for r in result.get('retries', []))}")
        origin = result.get("load_window_s", [0.0])[0]
        for restart in result.get("restarts", []):
            lines.append(f"restart {(restart['elapsed_s'] - origin) / 60:.1f} min into the load: "
                         f"{restart['signal']} {restart['service']} "
                         f"-> pid {restart['new_pid']} after {restart['restarted_after_s']}s")
    growth = result.get("growth", {})
    if growth:
        lines.append(f"after the warm-up (the load's first {result.get('warmup_s', 0):.0f} s; a restarted process's "
                     f"own first {result.get('warmup_s', 0):.0f} s too), to the load's end; target: RSS < "
                     f"{RSS_GROWTH_TARGET_PCT:g}%, files and connections +0):")
        lines.append(f"  {'process':<40} {'measured':>8} {'RSS MB':>15} {'RSS':>7} {'files':>9} {'tcp':>9}"
                     f" {'CPU':>6}")
        for subject, entry in growth.items():
            cpu = f"{entry['cpu_pct']:5.1f}%" if "cpu_pct" in entry else ""
            if "rss_growth_pct" not in entry and "tcp_growth" not in entry:
                lines.append(f"  {subject:<40} {'-':>8}  (restarted: no life measured for {MIN_MEASURED_S:g}s)"
                             f"{'':>25} {cpu}")
                continue
            rss = (f"{entry['rss_first_mb']:.0f}->{entry['rss_last_mb']:.0f}" if "rss_first_mb" in entry else "")
            pct = f"{entry['rss_growth_pct']:+.1f}%" if "rss_growth_pct" in entry else ""
            above = entry.get("rss_growth_pct", 0) >= RSS_GROWTH_TARGET_PCT \
                or entry.get("fds_growth", 0) > 0 or entry.get("tcp_growth", 0) > 0
            flag = "" if not above else " (a development stand-in)" if subject.split(".")[0] in STAND_INS \
                else " ABOVE TARGET"
            files = f"{entry['fds_first']:.0f}{entry['fds_growth']:+.0f}" if "fds_growth" in entry else ""
            tcp = f"{entry['tcp_first']:.0f}{entry['tcp_growth']:+.0f}" if "tcp_growth" in entry else ""
            lines.append(f"  {subject:<40} {entry['measured_s']:>7}s {rss:>15} {pct:>7} {files:>9} {tcp:>9} {cpu:>6}"
                         f"{flag}")
    checks = result.get("checks")
    if checks:
        figures = checks["figures"]
        lines.append(f"bookings by status: {figures.get('bookings')}; tours {figures.get('tours')}; payments "
                     f"{figures.get('payment_outcomes')}")
        lines.append(f"emails: {figures.get('email_deliveries')}; mail sink {figures.get('sink_messages')} messages; "
                     f"invoices outdated (paid or expired first) {figures.get('invoices_outdated')}; resent in the "
                     f"documented SIGKILL window {len(figures.get('sink_in_the_documented_window', []))}")
        lines.append(f"runs: {figures.get('runs')}; failed jobs left: {figures.get('failed_jobs')}")
        violations = checks["violations"]
        lines.append(f"invariant violations: {len(violations)}")
        lines += [f"  VIOLATED: {violation}" for violation in violations]
    lines.append(f"exit status {result.get('exit_code')}")
    return "\n".join(lines) + "\n"
