"""Metrics of bookings, payments and the outbox: events counted where they happen, state read at scrape."""

from __future__ import annotations

import logging

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine, func, select

from antrian import outbox
from antrian.models import Payment

logger = logging.getLogger(__name__)

BOOKINGS_CREATED = Counter("antrian_bookings_created_total", "Bookings created (seats taken).")
PAYMENTS = Counter(
    "antrian_payments_total", "Payment notifications handled, by what they did to the booking.", ["outcome"]
)
OUTBOX_PUBLISHED = Counter(
    "antrian_outbox_published_total", "Outbox messages published to RabbitMQ with confirms.", ["queue"]
)


class DatabaseStateCollector:
    """Facts that live in PostgreSQL, read once per scrape: the same value from every replica."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        try:
            with self.engine.connect() as connection:
                backlog, oldest = outbox.backlog(connection)
                refunds = connection.execute(
                    select(func.count()).select_from(Payment).where(Payment.outcome == "refund_due")
                ).scalar_one()
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
