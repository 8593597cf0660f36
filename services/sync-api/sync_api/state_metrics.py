"""Facts that live in PostgreSQL, read once per scrape: the same value from every replica.

Outbox backlog, refunds due, and failed jobs: the gauge of what is stored, and the retries and
flushes operators asked for (summed from ``failed_job_actions``, so the CLI's count too).
"""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import Engine, func, select

from antrian import failed_jobs, outbox
from antrian.models import Payment

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
                stored = failed_jobs.counts(connection)
                actions = failed_jobs.action_totals(connection)
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
