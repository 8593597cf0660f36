"""gunicorn settings for sync-api: sync threads (not gevent), metrics shared across worker processes."""

from __future__ import annotations

from antrian.config import load_settings
from antrian.metrics import mark_process_dead, prepare_multiprocess_dir

worker_class = "gthread"
workers = 2
threads = 8
timeout = 30
graceful_timeout = 25
accesslog = None
# The control socket sits at one fixed path per user: two instances on a host would fight over it,
# and a read-only root filesystem has nowhere to put it.
control_socket_disable = True
# gunicorn's own lines in the same JSON shape as the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "antrian.logging.json_formatter", "service": "sync-api"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
# Nothing that opens a connection is loaded before the fork (Dramatiq's broker is not process-safe).
preload_app = False


def on_starting(server) -> None:
    """Once, in the master before any worker: an empty metrics folder (not again on a HUP reload)."""
    settings = load_settings()
    prepare_multiprocess_dir(settings, "sync-api", settings.port)


def child_exit(server, worker) -> None:
    mark_process_dead(worker.pid, load_settings().prometheus_multiproc_dir)


def post_worker_init(worker) -> None:
    """Each web process relays the outbox its requests write (see sync_api.bookings.relay)."""
    from sync_api.bookings import relay
    worker.outbox_relay_stop = relay.start(worker.wsgi)


def worker_exit(server, worker) -> None:
    stop = getattr(worker, "outbox_relay_stop", None)
    if stop is not None:
        stop.set()
