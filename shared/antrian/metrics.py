"""Prometheus helpers for processes that fork (gunicorn, Dramatiq): multiprocess mode done right.

``PROMETHEUS_MULTIPROC_DIR`` must be set before ``prometheus_client`` is first imported, so the
entry points call :func:`prepare_multiprocess_dir` first thing and import metrics modules after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from antrian.config import Settings, export

if TYPE_CHECKING:  # not at run time: prometheus_client must be imported only after prepare_multiprocess_dir
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry


def prepare_multiprocess_dir(settings: Settings, service: str, port: int) -> str:
    """Create an empty folder for this service's metric files and point prometheus_client at it.

    The folder is emptied at start: stale files from a previous run would add old counts.
    """
    base = settings.prometheus_multiproc_base or tempfile.gettempdir()
    path = os.path.join(base, f"antrian-metrics-{service}-{port}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    # prometheus_client reads the first, Dramatiq's Prometheus middleware the other two, when imported.
    export({"PROMETHEUS_MULTIPROC_DIR": path, "dramatiq_prom_db": path, "dramatiq_prom_port": str(port)})
    return path


def registry_of(*collectors: Any, multiprocess_dir: str | None) -> CollectorRegistry:
    """A registry of every process of this service (and of ``collectors``).

    ``multiprocess_dir`` is the service's metrics folder (``Settings.prometheus_multiproc_dir``); without
    one, this process's own registry is read.
    """
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if multiprocess_dir:
        # prometheus_client leaves MultiProcessCollector's __init__ unannotated (the rest of the package is typed).
        MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Everything(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return registry


class _Everything:
    """The process's default registry as one collector, so that more can be added beside it per scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def mark_process_dead(pid: int, multiprocess_dir: str | None) -> None:
    """Drop a finished process's live gauges (gunicorn's ``child_exit`` hook)."""
    if multiprocess_dir:
        from prometheus_client import multiprocess

        # prometheus_client leaves multiprocess.mark_process_dead unannotated (the rest of the package is typed).
        multiprocess.mark_process_dead(pid, path=multiprocess_dir)  # type: ignore[no-untyped-call]


class MetricsServer:
    """``GET /metrics`` (the text exposition of ``collectors`` and of every process of the service) on a port of
    its own, from daemon threads: what gunicorn's master serves for sync-api (only one process can bind the port,
    and the master outlives its workers). Any other path is a 404; nothing else is served.

    The collectors run in the server's threads, never in a process forked later: whatever they open (a
    database pool, say) is theirs to keep away from forks.
    """

    #: Seconds a client may take to send its request (a scraper that connects and says nothing holds no thread).
    REQUEST_TIMEOUT_S = 10.0

    def __init__(self, host: str, port: int, *collectors: Any, multiprocess_dir: str | None) -> None:
        import socket
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        self.registry = registry_of(*collectors, multiprocess_dir=multiprocess_dir)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingMixIn, WSGIServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        class Quiet(WSGIRequestHandler):
            timeout = self.REQUEST_TIMEOUT_S  # socket timeout while the request is read and the answer written

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass  # a scrape every few seconds is no news

        self.httpd = make_server(host, port, self._app, server_class=Server, handler_class=Quiet)
        self.port = self.httpd.server_address[1]
        self._thread: Any = None

    def start(self) -> MetricsServer:
        import threading

        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        import gzip

        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        body = generate_latest(self.registry)
        headers = [("Content-Type", CONTENT_TYPE_LATEST)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]
