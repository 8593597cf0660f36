"""Facts that live in PostgreSQL and RabbitMQ, read once per scrape: the same value from every replica.

The latest sync run's progress, outbox backlog, refunds due, and failed jobs: the gauge of what is
stored, and the retries and flushes operators asked for (summed from ``failed_job_actions``, so the
CLI's count too). And each queue's messages and consumers, as ``antrian queues`` shows them.
"""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import Connection, Engine, func, select

from antrian.bookings import outbox
from antrian.config import Settings
from antrian.db.models import Booking, Payment
from antrian.jobs import failed_jobs, queue_stats
from antrian.sync import runs as sync_runs

logger = logging.getLogger(__name__)


class DatabaseStateCollector:
    """A prometheus_client collector reading its values from PostgreSQL at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        try:
            with self.engine.connect() as connection:
                backlog, oldest = outbox.backlog(connection)
                refunds = connection.execute(
                    select(func.count()).select_from(Payment).where(Payment.outcome == "refund_due")
                ).scalar_one()
                refund_oldest = _refund_due_oldest_age(connection)
                stored = failed_jobs.counts(connection)
                actions = failed_jobs.action_totals(connection)
                sync_idle = sync_runs.idle_seconds(connection)
            run = sync_runs.latest_run(self.engine)
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

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine

    def collect(self):
        try:
            stats = queue_stats.collect(self.settings, self.engine)
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
