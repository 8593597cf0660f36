"""Console entry points: ``sync-api`` (gunicorn) and ``sync-worker`` (Dramatiq), each checked before it starts."""

from __future__ import annotations

import os
import sys

from antrian.runtime.startup import settings_or_exit
from antrian.runtime.workers import exec_worker
from sync_api.sync.retries import STUDENT

#: How long a stopping sync-worker lets its running jobs finish: a student's job's whole time limit.
#: A fan-out still running then is requeued and resumes from its cursor (its time limit is a watchdog).
WORKER_SHUTDOWN_TIMEOUT_MS = STUDENT.time_limit_ms


def web() -> None:
    """Serve the API with gunicorn; extra arguments go to gunicorn."""
    settings = settings_or_exit("sync-api", require=("api_token",))
    args = [
        sys.executable, "-m", "gunicorn", "--config", "python:sync_api.gunicorn_conf",
        "--bind", f"{settings.host}:{settings.port}", *sys.argv[1:], "sync_api.wsgi:app",
    ]
    os.execv(sys.executable, args)


def worker() -> None:
    """Run the Dramatiq workers of queue sync-pembayaran; extra arguments go to dramatiq."""
    exec_worker("sync-worker", "sync_api.worker", sys.argv[1:], require=("upstream_base_url",),
                shutdown_timeout_ms=WORKER_SHUTDOWN_TIMEOUT_MS)
