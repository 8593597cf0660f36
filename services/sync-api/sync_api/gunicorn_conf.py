"""gunicorn settings for sync-api: sync threads (not gevent), metrics shared across worker processes."""

from __future__ import annotations

from antrian.config import load_settings
from antrian.metrics import mark_process_dead, prepare_multiprocess_dir

prepare_multiprocess_dir("sync-api", load_settings().port)

worker_class = "gthread"
workers = 2
threads = 8
timeout = 30
graceful_timeout = 25
accesslog = None
# Nothing that opens a connection is loaded before the fork (Dramatiq's broker is not process-safe).
preload_app = False


def child_exit(server, worker) -> None:
    mark_process_dead(worker.pid)
