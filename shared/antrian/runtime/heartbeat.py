"""Worker heartbeats: proof that a worker is consuming, not just alive, for Kubernetes' exec probes.

Each Dramatiq worker process writes ``<pid>.json`` into the service's heartbeat folder every
``ANTRIAN_HEARTBEAT_INTERVAL_S`` seconds (10), and only while every one of its threads is alive: a deadlocked or crashed
thread stops the beat. The file says whether every consumer holds an open connection to RabbitMQ.
``antrian-worker-probe SERVICE`` (liveness) checks that every process beat lately; with ``--ready``
(readiness) also that each is consuming. It imports nothing but the standard library: cheap to exec.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: at run time this module imports nothing but the standard library
    from dramatiq import Worker

#: A beat older than this means the process is stuck (three missed beats of the default 10 s,
#: ``ANTRIAN_HEARTBEAT_INTERVAL_S``).
MAX_AGE_S = 35.0


def folder(service: str) -> Path:
    """Where a service's worker processes beat: under the temp dir (``/tmp`` in the images)."""
    return Path(tempfile.gettempdir()) / f"antrian-heartbeat-{service}"


def prepare(service: str) -> Path:
    """Empty the service's heartbeat folder (beats of a previous run prove nothing); return it."""
    path = folder(service)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.json"):
        stale.unlink(missing_ok=True)
    return path


def consuming(worker: Worker) -> bool:
    """Every queue's consumer thread has a consumer whose connection to RabbitMQ is open."""
    for thread in worker.consumers.values():
        consumer = getattr(thread, "consumer", None)
        connection = getattr(consumer, "connection", None)
        if connection is None or not connection.is_open:
            return False
    return bool(worker.consumers)


def threads_alive(worker: Worker) -> bool:
    return all(t.is_alive() for t in [*worker.consumers.values(), *worker.workers])


def beat(path: Path, worker: Worker) -> bool:
    """Write this process's beat if all its threads live; False (nothing written) otherwise."""
    if not threads_alive(worker):
        return False
    record = {"at": time.time(), "consuming": consuming(worker), "queues": sorted(worker.consumers)}
    partial = path / f".{os.getpid()}.json.tmp"
    partial.write_text(json.dumps(record))
    partial.replace(path / f"{os.getpid()}.json")  # atomic: a probe never reads half a file
    return True


def check(path: Path, *, ready: bool, max_age_s: float = MAX_AGE_S, now: float | None = None) -> str | None:
    """None when every worker process beat within ``max_age_s`` (and consumes, if ``ready``); else why not."""
    now = time.time() if now is None else now
    beats = sorted(path.glob("*.json")) if path.is_dir() else []
    if not beats:
        return f"no worker process has beaten in {path} yet"
    for file in beats:
        try:
            record = json.loads(file.read_text())
        except (OSError, ValueError):
            return f"unreadable heartbeat {file.name}"
        age = now - record["at"]
        if age > max_age_s:
            return f"worker process {file.stem} last beat {age:.0f}s ago (stuck or dead threads)"
        if ready and not record["consuming"]:
            return f"worker process {file.stem} is not consuming (no connection to RabbitMQ)"
    return None


def probe(argv: list[str] | None = None) -> int:
    """``antrian-worker-probe SERVICE [--ready]``: exit 0 when healthy, else 1 with the reason on stderr."""
    parser = argparse.ArgumentParser(prog="antrian-worker-probe", description=__doc__.splitlines()[0])
    parser.add_argument("service", help="sync-worker, mailer or booking-expiry")
    parser.add_argument("--ready", action="store_true", help="also require every process to be consuming")
    parser.add_argument("--max-age", type=float, default=MAX_AGE_S, help="seconds a beat stays fresh")
    args = parser.parse_args(argv)
    problem = check(folder(args.service), ready=args.ready, max_age_s=args.max_age)
    if problem:
        print(f"antrian-worker-probe {args.service}: {problem}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    raise SystemExit(probe())


class Beating(threading.Thread):
    """The thread that beats for one worker process until it stops."""

    def __init__(self, path: Path, worker: Worker, *, interval_s: float) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.path, self.worker, self.interval_s = path, worker, interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                beat(self.path, self.worker)
            except Exception:  # noqa: BLE001 - a full disk, a consumer added meanwhile: the next beat may do
                pass  # and if none does, the probe says the beat is old
            self.stopped.wait(self.interval_s)
        (self.path / f"{os.getpid()}.json").unlink(missing_ok=True)
