"""Facts that live in PostgreSQL and RabbitMQ, read once per scrape: the same value from every replica.

The latest sync run's progress, outbox backlog, refunds due, and failed jobs: the gauge of what is
stored, and the retries and flushes operators asked for (summed from ``failed_job_actions``, so the
CLI's count too). And each queue's messages and consumers, as ``antrian queues`` shows them.

gunicorn's master serves them on ``METRICS_PORT`` (:func:`metrics_server`), never the API's port. A scrape
reads through indexes only (migration 0012: no statement scans ``payments`` or a run's ``sync_items``), from two
pooled connections of the master's own, and concurrent scrapes share one read (:class:`Coalesced`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import Connection, Engine, func, select

from antrian.bookings import outbox
from antrian.config import Settings
from antrian.db.engine import engine_for
from antrian.db.models import Booking, Payment
from antrian.jobs import failed_jobs, queue_stats
from antrian.metrics import MetricsServer
from antrian.sync import runs as sync_runs

logger = logging.getLogger(__name__)

#: How long a scrape waits for the read another scrape has in flight before it answers without the state.
COALESCE_WAIT_S = 8.0


def metrics_server(settings: Settings, *, host: str | None = None, port: int | None = None) -> MetricsServer:
    """sync-api's metrics server (not started): every gunicorn worker's metrics and the state read here, on
    ``METRICS_PORT`` (``settings.metrics_port_for("sync-api")``). Raises OSError when the port cannot be bound."""
    engine = ForkSafeEngine(settings)
    state = Coalesced(DatabaseStateCollector(engine.get), QueueStatsCollector(settings, engine.get))
    return MetricsServer(
        settings.host if host is None else host,
        settings.metrics_port_for("sync-api") if port is None else port,
        state, multiprocess_dir=settings.prometheus_multiproc_dir,
    )


class ForkSafeEngine:
    """An engine of two connections (the state's collectors run side by side), made at its first use (in the
    metrics server's threads), that a process forked later never uses: the child forgets it without closing it
    (the connections are the parent's, and psycopg does not end a parent's connection from a child), so
    gunicorn's workers, forked by the master whenever one is replaced, start with nothing of it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._forget)

    def get(self) -> Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                self._engine, self._pid = engine_for(self.settings, pool_size=2, max_overflow=0), os.getpid()
            return self._engine

    def _forget(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._engine = None
        self._lock = threading.Lock()  # the parent's may have been held by its scrape thread at the fork


class Coalesced:
    """The metrics of ``collectors``, read once for any number of scrapes waiting at the same time.

    A scrape never gets a read that started before it arrived (what it shows is as fresh as an uncached
    read), but a burst of scrapes costs at most two reads, one after the other, instead of one each. The
    collectors run side by side (PostgreSQL's reads beside RabbitMQ's management API): a scrape takes the
    slowest one's time, not the sum.
    """

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors
        self._pool = ThreadPoolExecutor(max_workers=len(collectors), thread_name_prefix="metrics-state")
        self._lock = threading.Lock()
        self._started_at = float("-inf")
        self._metrics: list[Any] = []

    def collect(self):
        arrived = time.monotonic()
        if not self._lock.acquire(timeout=COALESCE_WAIT_S):
            logger.warning("state metrics are missing from this scrape: the read in flight took over %ss",
                           COALESCE_WAIT_S)
            return []
        try:
            if self._started_at < arrived:
                started = time.monotonic()
                reads = [self._pool.submit(_read, collector) for collector in self.collectors]
                self._metrics = [metric for read in reads for metric in read.result()]
                self._started_at = started
            return list(self._metrics)
        finally:
            self._lock.release()


def _read(collector: Any) -> list[Any]:
    return list(collector.collect())


def _engine(engine: Engine | Callable[[], Engine]) -> Engine:
    return engine if isinstance(engine, Engine) else engine()


class DatabaseStateCollector:
    """A prometheus_client collector reading its values from PostgreSQL at each scrape."""

    def __init__(self, engine: Engine | Callable[[], Engine]) -> None:
        self.engine = engine

    def collect(self):
        try:
            engine = _engine(self.engine)
            with engine.connect() as connection:
                backlog, oldest = outbox.backlog(connection)
                refunds = connection.execute(
                    select(func.count()).select_from(Payment).where(Payment.outcome == "refund_due")
                ).scalar_one()
                refund_oldest = _refund_due_oldest_age(connection)
                stored = failed_jobs.counts(connection)
                actions = failed_jobs.action_totals(connection)
                sync_idle = sync_runs.idle_seconds(connection)
            run = sync_runs.latest_run(engine)
        except Exception as exc:  # noqa: BLE001 - the process's own metrics still matter while the database is away
            logger.warning("metrics read from the database are missing from this scrape: %s", exc)
            return
        yield GaugeMetricFamily("antrian_outbox_backlog", "Messages written but not yet published.", value=backlog)
        yield GaugeMetricFamily(
            "antrian_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox message.", value=oldest
        )
        yield GaugeMetricFamily(
            "antrian_payments_refund_due", "Payments recorded for bookings that could not be confirmed.", value=refunds
        )
        yield GaugeMetricFamily(
            "antrian_payments_refund_due_oldest_age_seconds",
            "Age of the oldest refund_due payment whose booking is not refunded yet (0 when none).",
            value=refund_oldest,
        )
        yield from _sync_run(run)
        yield GaugeMetricFamily(
            "antrian_sync_run_idle_seconds",
            "Seconds since the running sync run's last student outcome (or its start); 0 when none is running.",
            value=sync_idle,
        )
        failed = GaugeMetricFamily(
            "antrian_failed_jobs", "Failed jobs stored in failed_jobs, waiting for a retry or a flush.",
            labels=["queue", "actor"],
        )
        for queue, actor, count in stored:
            failed.add_metric([queue, actor], count)
        yield failed
        for action, name, help_text in (
            ("retry", "antrian_failed_jobs_retried", "Failed jobs put back on their queue by an operator."),
            ("flush", "antrian_failed_jobs_flushed", "Failed jobs deleted by an operator."),
        ):
            family = CounterMetricFamily(name, help_text, labels=["queue"])
            for done, queue, jobs in actions:
                if done == action:
                    family.add_metric([queue], jobs)
            yield family


def _refund_due_oldest_age(connection: Connection) -> float:
    """Seconds since the oldest ``refund_due`` payment arrived whose booking is not ``refunded`` yet (0 when none)."""
    oldest = connection.execute(
        select(func.coalesce(func.extract("epoch", func.now() - func.min(Payment.received_at)), 0))
        .select_from(Payment)
        .join(Booking, Booking.id == Payment.booking_id)
        .where(Payment.outcome == "refund_due", Booking.status != "refunded")
    ).scalar_one()
    return float(oldest)


def _sync_run(run: dict | None):
    """The latest run: its students, how many reached an outcome and failed, and whether it runs."""
    for name, key, help_text in (
        ("antrian_sync_run_students", "total", "Students in the latest sync run."),
        ("antrian_sync_run_processed", "processed", "Students of the latest sync run with a final outcome."),
        ("antrian_sync_run_failed", "failed", "Students of the latest sync run that failed."),
    ):
        yield GaugeMetricFamily(name, help_text, value=run[key] if run else 0)
    yield GaugeMetricFamily("antrian_sync_run_running", "1 while the latest sync run is running.",
                            value=1 if run and run["isRunning"] else 0)
    yield GaugeMetricFamily("antrian_sync_run_id", "The latest sync run's id (0 before the first).",
                            value=run["id"] if run else 0)


class QueueStatsCollector:
    """Each queue's ready, unacknowledged and delayed messages, its consumers (RabbitMQ's management API) and
    whether it is paused (PostgreSQL)."""

    def __init__(self, settings: Settings, engine: Engine | Callable[[], Engine]) -> None:
        self.settings, self.engine = settings, engine

    def collect(self):
        try:
            stats = queue_stats.collect(self.settings, _engine(self.engine))
        except Exception as exc:  # noqa: BLE001 - RabbitMQ away: the other metrics still matter
            logger.warning("queue metrics are missing from this scrape: %s", exc)
            return
        messages = GaugeMetricFamily("antrian_queue_messages", "Messages in a queue, by state.",
                                     labels=["queue", "state"])
        consumers = GaugeMetricFamily("antrian_queue_consumers", "Consumers (worker channels) of a queue.",
                                      labels=["queue"])
        paused = GaugeMetricFamily("antrian_queue_paused", "1 while an operator has paused the queue.",
                                   labels=["queue"])
        for queue in stats:
            for state in ("ready", "unacknowledged", "delayed"):
                value = getattr(queue, state)
                if value is not None:
                    messages.add_metric([queue.name, state], value)
            if queue.consumers is not None:
                consumers.add_metric([queue.name], queue.consumers)
            paused.add_metric([queue.name], 1 if queue.paused else 0)
        yield messages
        yield consumers
        yield paused
