"""``python -m bench.profile`` (``make profile``): where each path's CPU goes, sampled by py-spy while it works.

Each path runs its bench scenario (smaller than ``make bench``'s, the same code) while py-spy samples the real
processes doing the work, and writes, under ``bench/results/``:

- ``profile-<path>.svg``: a flame graph of every sample (width = CPU samples; hover a frame for its count);
- ``profile-<path>.txt``: the top frames by own time (the frame on CPU) and by total time (on the stack), and
  for the sweep its wall time beside the CPU the sampled process spent in Python;
- ``profile-<path>.raw``: the collapsed stacks py-spy recorded (``frame;frame;... count``), to diff or redraw.

Paths and what is sampled:

- ``sweep``: ``booking_expiry.bookings.sweep.sweep(engine)`` on 100,000 due bookings (bench part g's data), in
  this process on the worker's engine with the worker's JSON logging to a file, as part (g) runs it; py-spy
  samples this process only while the sweep runs. PostgreSQL's own CPU is not in it: the text says how much
  of the sweep's wall time the Python side was on CPU.
- ``sync``: part (a), 20,000 students by default; samples ``sync-worker`` and ``sync-api`` (with their
  subprocesses).
- ``booking``: part (e), POST /api/bookings at a steady rate; samples ``sync-api`` (gunicorn and its workers).
- ``email``: part (f), invoice emails to the local sink; samples ``mailer``.

py-spy reads another process's memory (``process_vm_readv``): it needs to run as root or with ``CAP_SYS_PTRACE``
(in a container: ``--cap-add SYS_PTRACE``; with Yama's ``ptrace_scope`` at 1, root or the capability is needed
even for one's own children). It is pinned in requirements-dev.txt. The figures of a profile are shares of
samples, so they do not depend on this machine's speed; the parts' own figures printed meanwhile are not
the bench's (py-spy takes CPU too, and the sizes are smaller): quote ``make bench`` for those.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

from . import common

PATHS = ("sweep", "sync", "booking", "email")
#: Which of a part's processes are sampled, by the start of their bench name.
SAMPLED = {"sync": ("sync-worker-", "sync-api-"), "booking": ("sync-api-",), "email": ("mailer-",)}
PY_SPY = str(common.BIN / "py-spy")
#: The database and vhost a profile uses (dropped and created at its start), apart from the bench's.
PROFILE_DATABASE = "antrian_profile"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=lambda v: [p.strip() for p in v.split(",") if p.strip()], default=list(PATHS),
                        help=f"paths to profile, of {', '.join(PATHS)}")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--sweep-bookings", type=int, default=100_000, help="due bookings per sweep (100,000)")
    parser.add_argument("--sweep-repeats", type=int, default=3, help="sweeps sampled, data regenerated each (3)")
    parser.add_argument("--sync-students", type=int, default=20_000)
    parser.add_argument("--booking-rate", type=int, default=200)
    parser.add_argument("--booking-seconds", type=int, default=20)
    parser.add_argument("--emails", type=int, default=3_000)
    parser.add_argument("--top", type=int, default=30, help="frames listed in each summary (30)")
    args = parser.parse_args(argv)
    unknown = [p for p in args.only if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(PY_SPY).exists():
        print(f"{PY_SPY} is missing: make install (py-spy is in requirements-dev.txt)", file=sys.stderr)
        return 2
    _own_database_and_vhost(PROFILE_DATABASE)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    common.set_log_dir(common.RESULTS_DIR / "logs" / f"profile-{stamp}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = False
    common.log(f"resetting database {common.DATABASE} and vhost {common.VHOST}")
    common.reset_database()
    common.reset_vhost()
    engine = common.make_engine()
    try:
        for path in PATHS:
            if path not in args.only:
                continue
            try:
                stacks, note = _profile(path, engine, args)
                _write(path, stacks, note, args)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the next path
                failed = True
                common.log(f"profile of {path} failed: {type(exc).__name__}: {exc}")
            finally:
                common.stop_all()
    finally:
        common.stop_all()
        engine.dispose()
    return 1 if failed else 0


def _own_database_and_vhost(name: str) -> None:
    """Point every bench helper (and every process they start, through ``common.base_env``) at database and vhost
    ``name``: a profile may run while ``make bench`` uses ``antrian_bench``."""
    common.DATABASE = common.VHOST = name
    common.DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    common.BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{name}"


def _profile(path: str, engine, args) -> tuple[Counter, list[str]]:
    if path == "sweep":
        return _profile_sweep(engine, args)
    from . import bookings_latency, email_rate, sync_throughput

    with _Attacher(path, SAMPLED[path], rate=args.rate) as attacher:
        if path == "sync":
            result = sync_throughput.run(engine, students=args.sync_students, processes=1, threads=16)
        elif path == "booking":
            result = bookings_latency.run(engine, rate=args.booking_rate, seconds=args.booking_seconds,
                                          concurrency=20)
        else:
            result = email_rate.run(engine, emails=args.emails, processes=2, threads=4)
        common.stop_all()  # py-spy writes its stacks when the process it samples ends
    note = [f"sampled: {', '.join(attacher.attached) or 'nothing'}",
            f"part's figures while sampled (not the bench's): {_brief(result)}"]
    return attacher.stacks(), note


def _brief(result: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.items() if isinstance(v, int | float | str))[:400]


# --------------------------------------------------------------------------- the sweep, in this process


def _profile_sweep(engine, args) -> tuple[Counter, list[str]]:
    from antrian.db.engine import make_engine
    from booking_expiry.bookings.sweep import BATCH_SIZE, sweep

    from . import expiry_sweep

    mix = expiry_sweep._mix(args.sweep_bookings, expiry_sweep.OTHERS_1, due=args.sweep_bookings)
    worker_engine = make_engine(common.DATABASE_URL, pool_size=2)
    stacks: Counter = Counter()
    walls = []
    try:
        with worker_engine.connect():
            pass
        for repeat in range(args.sweep_repeats):
            expiry_sweep._generate(engine, 100, mix)
            out = common.log_path(f"profile-sweep-{repeat}.raw")
            log = common.log_path("profile-sweep-worker.log")
            with expiry_sweep._worker_logging(log), _PySpy(os.getpid(), out, rate=args.rate, subprocesses=False):
                started = time.perf_counter()
                result = sweep(worker_engine)
                walls.append(time.perf_counter() - started)
            if not result.ran or result.expired != mix["DUE"]:
                raise RuntimeError(f"the sweep expired {result.expired} of {mix['DUE']}")
            stacks.update(_read_raw(out))
            common.log(f"sweep {repeat + 1}: {walls[-1]:.3f}s, {result.batches} batches of {BATCH_SIZE}")
    finally:
        worker_engine.dispose()
        with engine.begin() as connection:
            from sqlalchemy import text

            connection.execute(text("TRUNCATE tours, bookings, payments, email_deliveries, outbox RESTART IDENTITY"
                                    " CASCADE"))
    # Only the sweep's own thread: this process has no other busy thread, but keep what sweep() called.
    mine = Counter({stack: n for stack, n in stacks.items() if "sweep (booking_expiry/bookings/sweep.py" in stack})
    cpu_s = sum(mine.values()) / args.rate
    note = [f"{args.sweep_repeats} sweep(s) of {mix['DUE']:,} due bookings, batch {BATCH_SIZE:,}, wall"
            f" {', '.join(f'{w:.2f}' for w in walls)} s; Python on CPU {cpu_s:.2f} s of {sum(walls):.2f} s"
            f" ({100 * cpu_s / sum(walls):.0f}%; the rest is waiting on PostgreSQL, or the machine)"]
    return mine, note


# --------------------------------------------------------------------------- py-spy


class _PySpy:
    """``py-spy record --format raw`` on one process, from enter (once it samples) to exit (SIGINT: it writes).

    ``--gil``: only the thread holding the GIL is sampled, i.e. Python on CPU. Without it py-spy tells idle threads
    by their state in /proc, which here counted a mailer's 8 threads blocked on sockets as busy (64 CPU s in 17 s
    on 2 CPUs); ``--nonblocking``: the sampled process is not paused (less overhead, rarely a torn stack)."""

    def __init__(self, pid: int, out: Path, *, rate: int, subprocesses: bool) -> None:
        self.pid, self.out = pid, out
        self.argv = [PY_SPY, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output",
                     str(out), "--nonblocking", "--gil", *(["--subprocesses"] if subprocesses else [])]

    def start(self) -> _PySpy:
        self.err = self.out.with_suffix(".py-spy.log").open("w")
        self.process = subprocess.Popen(self.argv, stdout=self.err, stderr=subprocess.STDOUT)
        return self

    def __enter__(self) -> _PySpy:
        self.start()
        log = self.out.with_suffix(".py-spy.log")
        common.wait_until(lambda: "Sampling process" in log.read_text() or self.process.poll() is not None,
                          timeout=30, interval=0.02, what=f"py-spy to attach to {self.pid}")
        if self.process.poll() is not None:
            raise RuntimeError(f"py-spy could not sample {self.pid} (needs root or CAP_SYS_PTRACE):"
                               f" {log.read_text()[-800:]}")
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, timeout: float = 60) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.wait(timeout)

    def wait(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)
        self.err.close()


class _Attacher:
    """A thread that starts one py-spy (with ``--subprocesses``) on every bench process whose name starts with one
    of ``prefixes``, once it is ready (its ready URL answers: start-up and imports are not what is measured)."""

    def __init__(self, path: str, prefixes: tuple[str, ...], *, rate: int) -> None:
        self.path, self.prefixes, self.rate = path, prefixes, rate
        self.spies: dict[str, _PySpy] = {}
        self.attached: list[str] = []
        self.done = threading.Event()

    def __enter__(self) -> _Attacher:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            for service in common.running():
                if service.name in self.spies or not service.name.startswith(self.prefixes):
                    continue
                if service.ready_url and not common.http_ok(service.ready_url):
                    continue
                out = common.log_path(f"profile-{self.path}-{service.name}.raw")
                self.spies[service.name] = _PySpy(service.pid, out, rate=self.rate, subprocesses=True).start()
                self.attached.append(service.name)
                common.log(f"py-spy sampling {service.name} (pid {service.pid})")

    def __exit__(self, *exc_info) -> None:
        self.done.set()
        self.thread.join()
        for spy in self.spies.values():
            spy.wait(60)  # each ends with the process it samples (stopped by the part)

    def stacks(self) -> Counter:
        stacks: Counter = Counter()
        for name, spy in self.spies.items():
            for stack, count in _read_raw(spy.out).items():
                stacks[f"{name};{stack}"] += count
        return stacks


#: ``--subprocesses`` roots each stack at ``process <pid>:"<command line>"`` (a child's below its parent's): without
#: the pids, the worker processes of one command add up.
_PID = re.compile(r"(^|;)process \d+:")


def _read_raw(path: Path) -> Counter:
    stacks: Counter = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stack = _PID.sub(r"\1process:", stack)
        # A stack of process frames only: no Python thread of it held the GIL (``--gil``), nothing to count.
        if stack and count.isdigit() and not stack.rpartition(";")[2].startswith("process:"):
            stacks[stack] += int(count)
    return stacks


# --------------------------------------------------------------------------- output


_LINE = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: a function's samples together, whatever line was running."""
    return _LINE.sub(")", frame)


def summary(stacks: Counter, top: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(own, total, samples): functions by samples where they were on CPU, and where they were on the stack."""
    own: Counter = Counter()
    total: Counter = Counter()
    for stack, count in stacks.items():
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own.most_common(top), total.most_common(top), sum(stacks.values())


def _write(path: str, stacks: Counter, note: list[str], args) -> None:
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    base = common.RESULTS_DIR / f"profile-{path}"
    base.with_suffix(".raw").write_text("".join(f"{s} {n}\n" for s, n in sorted(stacks.items())))
    own, total, samples = summary(stacks, args.top)
    lines = [f"profile of {path}, {time.strftime('%Y-%m-%d %H:%M:%S')}: {samples:,} samples at {args.rate}/s"
             f" ({samples / args.rate:.1f} CPU s); machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
             *note, "", "own time (the function on CPU):"]
    lines += [f"  {100 * n / max(samples, 1):5.1f}%  {frame}" for frame, n in own]
    lines += ["", "total time (the function on the stack):"]
    lines += [f"  {100 * n / max(samples, 1):5.1f}%  {frame}" for frame, n in total]
    base.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    base.with_suffix(".svg").write_text(flamegraph(stacks, title=f"antrian: {path} ({samples:,} samples)"))
    common.log(f"{path}: {base}.svg, {base}.txt")
    print("\n".join(lines[:3 + min(args.top, 12)]), flush=True)


def flamegraph(stacks: Counter, *, title: str, width: int = 1400, row: int = 16, min_share: float = 0.0005) -> str:
    """A flame graph of collapsed stacks as a self-contained SVG (roots at the bottom; <title> shows counts)."""
    tree: dict = {}
    for stack, count in stacks.items():
        node = tree
        for frame in map(_function, stack.split(";")):  # a function's lines together: one box per call path
            child = node.setdefault(frame, [0, {}])
            child[0] += count
            node = child[1]
    total = max(sum(stacks.values()), 1)
    boxes: list[tuple[str, int, float, int, float]] = []

    def place(children: dict, x: float, depth: int) -> None:
        for frame, (count, grandchildren) in sorted(children.items()):
            w = count / total * width
            if count / total >= min_share:
                boxes.append((frame, count, x, depth, w))
                place(grandchildren, x, depth + 1)
            x += w

    place(tree, 0.0, 0)
    height = (max((box[3] for box in boxes), default=0) + 3) * row
    body = []
    for frame, count, x, depth, w in boxes:
        y = height - (depth + 1) * row
        hue = 10 + zlib.crc32(frame.split(" (")[0].encode()) % 40
        chars = int(w / 6.6)
        label = frame if chars >= len(frame) else frame[:chars - 2] + ".." if chars > 3 else ""
        body.append(f'<g><title>{html.escape(frame)} ({count:,} samples, {100 * count / total:.2f}%)</title>'
                    f'<rect x="{x:.2f}" y="{y}" width="{max(w - 0.5, 0.1):.2f}" height="{row - 1}"'
                    f' fill="hsl({hue},85%,60%)"/>'
                    f'<text x="{x + 2:.2f}" y="{y + row - 4}">{html.escape(label)}</text></g>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace"'
            f' font-size="11">\n<text x="4" y="13">{html.escape(title)}</text>\n' + "\n".join(body) + "\n</svg>\n")


if __name__ == "__main__":
    sys.exit(main())
