"""SMTP_RATE_LIMIT through real processes: two mailer processes share one budget, and every email goes once."""

from __future__ import annotations

import time

from sqlalchemy import text

from antrian.messages import SEND_INVOICE_EMAIL
from antrian.runtime.broker import make_broker
from tests.support import (
    ARRIVAL_JITTER_S,
    ARRIVAL_WINDOW_S,
    busiest_second,
    metric,
    settings_for_tests,
    settled,
    wait_until,
)

#: Emails per second, and invoices enough for 4 s at that pace.
RATE, EMAILS = 20, 80


def pending_bookings(engine, count: int) -> list[int]:
    with engine.begin() as connection:
        tour = connection.execute(text(
            "INSERT INTO tours (name, quota, price, starts_at) VALUES ('Bromo', 0, 750000, now() + interval '30 days')"
            " RETURNING id")).scalar_one()
        return connection.execute(text(
            "INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, expires_at) "
            "SELECT 'RATE-' || lpad(g::text, 4, '0'), :tour, 'Customer ' || g, 'c' || g || '@example.com', 1, "
            "750000, now() + interval '1 hour' FROM generate_series(1, :n) g RETURNING id"),
            {"tour": tour, "n": count}).scalars().all()


def test_two_mailer_processes_keep_to_the_smtp_limit_and_send_each_email_once(clean, smtp_server, start_mailer):
    # Given 80 pending bookings and two mailer processes of 4 threads sharing a limit of 20 emails/s
    bookings = pending_bookings(clean, EMAILS)
    accepted: list[float] = []
    smtp_server.on_accept = lambda message: accepted.append(time.monotonic())
    mailer = start_mailer(smtp_server, processes=2, threads=4, SMTP_RATE_LIMIT=str(RATE))

    # When all their invoices are queued at once
    broker = make_broker(settings_for_tests())
    for booking_id in bookings:
        SEND_INVOICE_EMAIL.send(broker, booking_id)
    broker.close()
    wait_until(lambda: len(smtp_server.messages) >= EMAILS, timeout=30, what=f"{EMAILS} invoices")
    settled()  # nothing in flight: no second copy can still come

    # Then the SMTP server never took more than the limit plus two leases (1 email each at 20/s) in any 2 seconds,
    # give or take the arrivals' jitter (a limiter letting 20% too many through fails this)
    most = busiest_second(accepted, window_s=ARRIVAL_WINDOW_S)
    assert most <= RATE * (ARRIVAL_WINDOW_S + ARRIVAL_JITTER_S) + 2, most
    assert max(accepted) - min(accepted) >= 3  # the limit set the pace
    # And each invoice went exactly once, on its first attempt
    assert sorted(str(message["Message-ID"]) for message in smtp_server.messages) == [
        f"<invoice.RATE-{n:04d}@tripin.example>" for n in range(1, EMAILS + 1)
    ]
    with clean.connect() as connection:
        deliveries = connection.execute(text("SELECT status, attempts FROM email_deliveries")).all()
    assert sorted(deliveries) == [("sent", 1)] * EMAILS
    assert metric(mailer.metrics_url, "dramatiq_message_retries_total") == 0
    assert metric(mailer.metrics_url, "antrian_rate_limit_wait_seconds_count", limit="smtp") == EMAILS
