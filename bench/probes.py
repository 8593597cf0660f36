"""What the bench measures beside its figures, to show where time goes: CPU, DB sessions, memory, upstream.

All of it reads /proc, pg_stat_activity or the upstream itself, from outside the measured processes.
"""

from __future__ import annotations

import os
import re
import threading
import time

import requests
from sqlalchemy import Engine, text

from . import common


def upstream_latency_ms(upstream: str, *, requests_count: int) -> dict:
    """Median latency of one GET to the school API, on a kept-alive session (as workers do) and on new ones.

    A calibration: what one upstream call costs a worker thread, whatever ``--latency-ms`` says.
    """
    url = f"{upstream}/siswa/1/pembayaran"
    kept, fresh = [], []
    with requests.Session() as session:
        session.get(url, timeout=10)
        for _ in range(requests_count):
            started = time.perf_counter()
            session.get(url, timeout=10).raise_for_status()
            kept.append((time.perf_counter() - started) * 1000)
    for _ in range(max(requests_count // 5, 2)):
        started = time.perf_counter()
        requests.get(url, timeout=10).raise_for_status()
        fresh.append((time.perf_counter() - started) * 1000)
    return {"keep_alive_ms": round(common.median(kept), 1), "new_connection_ms": round(common.median(fresh), 1)}



# --------------------------------------------------------------------------- where time goes


class Sampler:
    """Calls :meth:`sample` every ``interval`` seconds in a thread while its ``with`` block runs."""

    name = "sampler"

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        raise NotImplementedError


class DbActivitySampler(Sampler):
    """Samples pg_stat_activity of the bench database every ``interval`` seconds: what its sessions do.

    Reported as the mean number of sessions per state and wait event ("active Lock:transactionid",
    "idle in transaction", ...), which shows whether workers queue on a lock or on the server;
    also how many sessions ended meanwhile (connections opened and closed again: each costs a
    PostgreSQL backend process, too short-lived for :class:`CpuMeter` to see).
    """

    _QUERY = text(
        """SELECT state || coalesce(' ' || wait_event_type || ':' || wait_event, '') AS what, count(*) AS n
           FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND backend_type = 'client backend' AND state <> 'idle'
           GROUP BY 1"""
    )

    name = "db-activity-sampler"

    def __init__(self, engine: Engine, *, interval: float = 0.5) -> None:
        super().__init__(interval=interval)
        self.engine = engine
        self.samples = 0
        self.totals: dict[str, int] = {}

    _SESSIONS = text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")

    def __enter__(self) -> DbActivitySampler:
        self._sessions_before = self._sessions()
        return super().__enter__()

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        self.sessions_ended = self._sessions() - self._sessions_before

    def _sessions(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(self._SESSIONS).scalar_one()

    def sample(self) -> None:
        with self.engine.connect() as connection:
            rows = connection.execute(self._QUERY).all()
        self.samples += 1
        for row in rows:
            self.totals[row.what] = self.totals.get(row.what, 0) + row.n

    def report(self, top: int = 5) -> dict:
        """The ``top`` most common states (mean number of sessions in each), and the sessions that ended."""
        means = {what: round(n / max(self.samples, 1), 1) for what, n in self.totals.items()}
        return {"states": dict(sorted(means.items(), key=lambda item: -item[1])[:top]),
                "sessions_ended": self.sessions_ended}


class CpuMeter:
    """CPU used between enter and exit: the whole machine's busy share, and CPU seconds by who used them.

    Every process is sampled every ``interval`` seconds and put under the name of the bench
    service whose group it is in, or postgres, rabbitmq, bench or other: "other" is what
    processes outside this benchmark took from the same CPUs. "unseen" is busy CPU that no
    sampled process accounts for: processes that lived less than a sampling interval (such as a
    PostgreSQL backend per short-lived connection) and the kernel's own work.
    """

    def __init__(self, *, interval: float = 0.5) -> None:
        self.interval = interval
        self._first: dict[int, tuple[str, float]] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-meter", daemon=True)

    def __enter__(self) -> CpuMeter:
        self.load_before = os.getloadavg()[0]
        self._groups = {service.pid: re.sub(r"-\d+$", "", service.name) for service in common.running()}
        self._machine_start = _cpu_times()
        self._first = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)
        self._last.update(self._sample())
        busy, idle, steal = (end - start for end, start in zip(_cpu_times(), self._machine_start, strict=True))
        total = busy + idle + steal
        self.busy_percent = round(100 * busy / total, 1) if total else 0.0
        self.steal_percent = round(100 * steal / total, 1) if total else 0.0
        self.busy_seconds = busy / _CLOCK_TICKS

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._sample())

    def _sample(self) -> dict[int, tuple[str, float]]:
        seen = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                pid = int(entry)
                try:
                    with open(f"/proc/{pid}/stat") as stat:
                        head, tail = stat.read().rsplit(")", 1)
                except OSError:
                    continue
                fields = tail.split()
                seen[pid] = (self._who(pid, head.split("(", 1)[1], int(fields[2])),
                             (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
        return seen

    def _who(self, pid: int, command: str, pgid: int) -> str:
        if pgid in self._groups:
            return self._groups[pgid]
        if command.startswith("postgres"):
            return "postgres"
        if command in {"beam.smp", "erl_child_setup", "epmd", "inet_gethost"}:
            return "rabbitmq"
        if pid == os.getpid():
            return "bench"
        return "other"

    def report(self) -> dict:
        """Busy share and load, and CPU seconds used by each kind of process (largest first)."""
        seconds: dict[str, float] = {}
        for pid, (who, last) in self._last.items():
            first = self._first.get(pid, (who, 0.0))[1]
            seconds[who] = seconds.get(who, 0.0) + max(last - first, 0.0)
        # Busy CPU no process still there accounts for: processes too short-lived to be sampled
        # (a PostgreSQL backend per new connection, mostly) and the kernel's own work.
        seconds["unseen"] = max(self.busy_seconds - sum(seconds.values()), 0.0)
        by_who = dict(sorted(((k, round(v, 2)) for k, v in seconds.items()), key=lambda item: -item[1]))
        return {"machine_cpu_busy_percent": self.busy_percent, "machine_cpu_steal_percent": self.steal_percent,
                "loadavg_1m_before": round(self.load_before, 2),
                "cpu_seconds": by_who}


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[int, int, int]:
    """(busy, idle, steal) jiffies of all CPUs; iowait counts as idle, steal (the hypervisor's) apart."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle, steal = values[3] + values[4], values[7]
    return sum(values[:8]) - idle - steal, idle, steal


# --------------------------------------------------------------------------- memory


class MemorySampler(Sampler):
    """Samples VmRSS (and reads VmHWM) of every process in a process group every ``interval`` seconds.

    Used on a Dramatiq worker: the group is its main process, its worker processes and its forks.
    """

    name = "memory-sampler"

    def __init__(self, leader_pid: int, *, processes: int, interval: float = 0.2) -> None:
        super().__init__(interval=interval)
        self.leader = leader_pid
        self.processes = processes
        self.peaks: dict[int, dict] = {}

    def sample(self) -> None:
        for pid in _group_members(self.leader):
            status = _proc_status(pid)
            if not status:
                continue
            peak = self.peaks.setdefault(pid, {"pid": pid, "ppid": status["PPid"], "start": _start_time(pid),
                                               "max_rss_mb": 0.0, "hwm_mb": 0.0, "threads": 0})
            peak["max_rss_mb"] = max(peak["max_rss_mb"], status["VmRSS"] / 1024)
            peak["hwm_mb"] = max(peak["hwm_mb"], status["VmHWM"] / 1024)
            peak["threads"] = max(peak["threads"], status["Threads"])

    def report(self) -> list[dict]:
        """One row per process seen: its role (main, worker N, fork), max sampled RSS and VmHWM in MB."""
        rows = sorted(self.peaks.values(), key=lambda p: (p["pid"] != self.leader, p["start"]))
        workers = 0
        for row in rows:
            if row["pid"] == self.leader:
                row["role"] = "main"
            elif row["ppid"] == self.leader and workers < self.processes:
                row["role"] = f"worker {workers}"
                workers += 1
            else:
                row["role"] = "fork"
            row["max_rss_mb"] = round(row["max_rss_mb"], 1)
            row["hwm_mb"] = round(row["hwm_mb"], 1)
        return rows


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except ProcessLookupError:
                pass
    return members


def _proc_status(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return None
    try:
        return {
            "PPid": int(fields["PPid"]),
            "Threads": int(fields["Threads"]),
            "VmRSS": int(fields["VmRSS"].split()[0]),
            "VmHWM": int(fields["VmHWM"].split()[0]),
        }
    except KeyError:  # a zombie has no memory lines
        return None


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0
