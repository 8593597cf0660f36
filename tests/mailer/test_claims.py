"""The mailer's claim protocol through real processes (mailer, RabbitMQ, PostgreSQL, an aiosmtpd server): no database
transaction is open while an email is being sent, a duplicate that comes meanwhile sends nothing, and a mailer
killed mid-send leads to exactly one more send once its claim's lease is over."""

from __future__ import annotations

import threading

from sqlalchemy import text

from antrian.messages import SEND_INVOICE_EMAIL
from antrian.runtime.broker import make_broker
from tests.mailer.test_rate_limit import pending_bookings
from tests.support import metric, settings_for_tests, settled, wait_until


def publish_invoice(booking_id: int) -> None:
    broker = make_broker(settings_for_tests())
    try:
        SEND_INVOICE_EMAIL.send(broker, booking_id)
    finally:
        broker.close()


def delivery(engine, booking_id: int) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(text(
            "SELECT status, attempts, message_id, claim_id, claimed_until FROM email_deliveries"
            " WHERE booking_id = :id AND kind = 'invoice'"), {"id": booking_id}).one()._mapping)


def sessions(engine) -> list[tuple[str, str]]:
    """(state, query) of every other session on this test's database."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"))]


def test_no_transaction_is_open_while_sending_and_a_duplicate_meanwhile_sends_nothing(clean, smtp_server,
                                                                                        start_mailer):
    # Given a mailer whose SMTP server holds the first email's DATA until the gate opens
    [booking_id] = pending_bookings(clean, 1)
    gate = threading.Event()
    smtp_server.on_data = lambda: gate.wait(30)
    mailer = start_mailer(smtp_server, threads=2)
    try:
        # When its invoice is being sent
        publish_invoice(booking_id)
        wait_until(lambda: smtp_server.attempts == 1, timeout=20, what="the invoice's DATA at the SMTP server")

        # Then its delivery row is claimed, and no session of the mailer (nor any other) is idle in a transaction
        claimed = delivery(clean, booking_id)
        assert claimed["status"] == "pending" and claimed["claim_id"] is not None and claimed["claimed_until"]
        states = sessions(clean)
        assert states and not [s for s in states if (s[0] or "").startswith("idle in transaction")], states

        # And a duplicate of the message, taken by the mailer's other thread, finds the claim and sends nothing
        publish_invoice(booking_id)
        wait_until(lambda: metric(mailer.metrics_url, "antrian_emails_total", kind="invoice", result="busy") >= 1,
                   timeout=20, what="the duplicate to find the email being sent")
        assert smtp_server.attempts == 1
    finally:
        gate.set()

    # Once the first send is through, the duplicate ends as a duplicate: one email, recorded once
    wait_until(lambda: metric(mailer.metrics_url, "antrian_emails_total", kind="invoice", result="duplicate") == 1,
               timeout=30, what="the duplicate to end as one")
    settled()
    assert smtp_server.attempts == 1 and len(smtp_server.messages) == 1
    done = delivery(clean, booking_id)
    assert (done["status"], done["attempts"], done["claim_id"], done["claimed_until"]) == ("sent", 1, None, None)
    assert metric(mailer.metrics_url, "antrian_emails_total", kind="invoice", result="sent") == 1
    assert metric(mailer.metrics_url, "dramatiq_message_retries_total") == 0


def test_a_mailer_killed_mid_send_leads_to_exactly_one_more_send_once_the_lease_is_over(clean, smtp_server,
                                                                                        start_mailer):
    # Given a mailer killed (SIGKILL) while the SMTP server holds its email's DATA; the server then takes it
    [booking_id] = pending_bookings(clean, 1)
    gate = threading.Event()
    smtp_server.on_data = lambda: gate.wait(30)
    first = start_mailer(smtp_server, threads=1)
    publish_invoice(booking_id)
    wait_until(lambda: smtp_server.attempts == 1, timeout=20, what="the invoice's DATA at the SMTP server")
    first.kill()
    gate.set()
    smtp_server.on_data = None
    wait_until(lambda: len(smtp_server.messages) == 1, timeout=10, what="the server to take the first copy")
    assert delivery(clean, booking_id)["status"] == "pending"  # the claim stays: its process died

    # When another mailer gets the redelivered message while the dead one's claim lasts
    second = start_mailer(smtp_server, threads=1)
    wait_until(lambda: metric(second.metrics_url, "antrian_emails_total", kind="invoice", result="busy") >= 2,
               timeout=30, what="the redelivery to find the claim still live, twice")
    # Then it sends nothing while the lease lasts
    assert smtp_server.attempts == 1

    # When the lease is over (made so here rather than waited for: it is the time limit plus an SMTP timeout)
    with clean.begin() as connection:
        connection.execute(text("UPDATE email_deliveries SET claimed_until = now() - interval '1 second'"
                                " WHERE booking_id = :id"), {"id": booking_id})

    # Then the email goes exactly once more, with the same Message-ID, and is recorded as sent on one attempt
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=40, what="the email sent again after the lease")
    settled(timeout=60)
    assert smtp_server.attempts == 2
    first_copy, second_copy = smtp_server.messages
    assert first_copy["Message-ID"] == second_copy["Message-ID"]
    done = delivery(clean, booking_id)
    assert (done["status"], done["attempts"], done["claim_id"]) == ("sent", 1, None)
    assert metric(second.metrics_url, "antrian_emails_total", kind="invoice", result="sent") == 1
    assert metric(second.metrics_url, "dramatiq_message_retries_total") == 0
