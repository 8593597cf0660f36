"""gunicorn settings for sync-api: sync threads (not gevent), metrics shared across worker processes and served
by the master on ``METRICS_PORT``."""

from __future__ import annotations

from antrian.config import load_settings
from antrian.metrics import mark_process_dead, prepare_multiprocess_dir
from antrian.runtime.startup import EXIT_CONFIG, fail

worker_class = "gthread"
workers = 2
threads = 8
timeout = 30
graceful_timeout = 25
accesslog = None
# One JSON line per request, its facts as fields (sync_api.access_log: cheaper than gunicorn's Apache atoms).
logger_class = "sync_api.access_log.AccessLogger"
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
    """Once, in the master before any worker (not again on a HUP reload): an empty metrics folder, and the
    metrics server on ``METRICS_PORT``.

    Only the master can serve every worker's metrics from one port (a worker would bind it once per process),
    and it outlives its workers. The server's threads read the state metrics through an engine they make at
    the first scrape, which a worker forked later forgets (:class:`sync_api.web.state_metrics.ForkSafeEngine`).
    The ORM is configured here, before any fork and any thread, so no worker inherits its lock held.
    """
    settings = load_settings()
    prepare_multiprocess_dir(settings, "sync-api", settings.port)
    settings = load_settings()  # again, with the metrics folder just exported
    # Imported only now: prometheus_client must see the metrics folder just exported.
    from sqlalchemy.orm import configure_mappers

    from sync_api.web.state_metrics import metrics_server

    configure_mappers()
    address = f"{settings.host}:{settings.metrics_port_for('sync-api')}"
    if settings.metrics_port_for("sync-api") == settings.port:
        fail("sync-api", f"METRICS_PORT must differ from PORT ({settings.port}): /metrics is not served on the API's "
                         "port", EXIT_CONFIG)
    try:
        server.antrian_metrics = metrics_server(settings).start()
    except OSError as exc:
        fail("sync-api", f"cannot serve /metrics on {address} (METRICS_PORT): {exc.strerror or exc}", EXIT_CONFIG)
    server.log.info("Serving /metrics at: http://%s/metrics", address)


def on_exit(server) -> None:
    metrics = getattr(server, "antrian_metrics", None)
    if metrics is not None:
        metrics.stop()


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
