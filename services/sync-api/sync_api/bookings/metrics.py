"""Metrics of bookings, payments and the outbox, counted where they happen (their state: state_metrics)."""

from __future__ import annotations

from prometheus_client import Counter

BOOKINGS_CREATED = Counter("antrian_bookings_created_total", "Bookings created (seats taken).")
PAYMENTS = Counter(
    "antrian_payments_total", "Payment notifications handled, by what they did to the booking.", ["outcome"]
)
OUTBOX_PUBLISHED = Counter(
    "antrian_outbox_published_total", "Outbox messages published to RabbitMQ with confirms.", ["queue"]
)
