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


def exposition(*collectors: Any, multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The current metrics of every process of this service (and of ``collectors``), and their content type.

    ``multiprocess_dir`` is the service's metrics folder (``Settings.prometheus_multiproc_dir``); without
    one, this process's own registry is read.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if multiprocess_dir:
        registry = CollectorRegistry()
        # prometheus_client leaves MultiProcessCollector's __init__ unannotated (the rest of the package is typed).
        MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Everything(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


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
