"""Prometheus helpers for processes that fork (gunicorn, Dramatiq): multiprocess mode done right.

``PROMETHEUS_MULTIPROC_DIR`` must be set before ``prometheus_client`` is first imported, so the
entry points call :func:`prepare_multiprocess_dir` first thing and import metrics modules after.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def prepare_multiprocess_dir(service: str, port: int) -> str:
    """Create an empty folder for this service's metric files and point prometheus_client at it.

    The folder is emptied at start: stale files from a previous run would add old counts.
    """
    base = os.environ.get("PROMETHEUS_MULTIPROC_BASE") or tempfile.gettempdir()
    path = os.path.join(base, f"antrian-metrics-{service}-{port}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # Dramatiq's Prometheus middleware reads these two when it is imported.
    os.environ["dramatiq_prom_db"] = path
    os.environ["dramatiq_prom_port"] = str(port)
    return path


def exposition(*collectors) -> tuple[bytes, str]:
    """The current metrics of every process of this service (and of ``collectors``), and their content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Everything(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Everything:
    """The process's default registry as one collector, so that more can be added beside it per scrape."""

    def __init__(self, registry) -> None:
        self.registry = registry

    def collect(self):
        return self.registry.collect()


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (gunicorn's ``child_exit`` hook)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
