"""``antrian bookings show|resend`` in the terminal, against sync-api's outbox relay, a real mailer and a real SMTP
server: support reads a booking's emails and sends one again, once; bad input changes nothing."""

from __future__ import annotations

import pytest

from antrian.messages import EMAILS_QUEUE, SEND_INVOICE_EMAIL
from tests.jobs.test_jobs_cli import antrian
from tests.mailer.test_resend import resends
from tests.support import outbox_drained, settled, take_messages, wait_until
from tests.sync_api.bookings.helpers import book, create_tour


@pytest.fixture
def web(clean, start_web):
    return start_web(BOOKING_EXPIRY_MINUTES="30")


def test_support_shows_a_booking_and_resends_its_invoice_once_from_the_terminal(
    web, auth, smtp_server, start_mailer, clean
):
    # Given a booking whose invoice the mailer sent
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=2, customer_name="Sari Dewi").json()
    code, booking_id = booking["code"], booking["id"]
    wait_until(lambda: len(smtp_server.messages) == 1, timeout=20, what="the invoice")
    wait_until(lambda: "sent" in antrian("bookings", "show", code).stdout, timeout=10, what="the invoice marked sent")

    # When support looks it up by its code, as the customer reads it out
    shown = antrian("bookings", "show", f" {code.lower()} ")

    # Then it shows the booking and its invoice with the Message-ID the customer got
    assert shown.returncode == 0, shown.stderr
    assert f"booking:   {code} (id {booking_id})" in shown.stdout
    assert "customer:  Sari Dewi <budi@example.com>" in shown.stdout and "status:    pending, pay by" in shown.stdout
    assert f"amount:    {booking['total_amount']}" in shown.stdout and "Bromo Sunrise" in shown.stdout
    [row] = [line for line in shown.stdout.splitlines() if line.startswith("invoice")]
    assert row.split()[:2] == ["invoice", "sent"] and smtp_server.messages[0]["Message-ID"] in row
    assert antrian("bookings", "show", str(booking_id)).stdout == shown.stdout

    # When support resends the invoice
    queued = antrian("bookings", "resend", code, "invoice")

    # Then one line says what was queued, and the mailer sends exactly one more invoice
    assert queued.returncode == 0, queued.stderr
    [row] = resends(clean)
    assert queued.stdout == (f"resend {row['id']} queued: booking {code}'s invoice email, "
                             f"sent once more by the mailer\n")
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=20, what="the resent invoice")
    outbox_drained(clean)
    settled()
    assert len(smtp_server.messages) == 2
    assert smtp_server.messages[1]["Message-ID"] == f"<invoice.{code}.resend-{row['id']}@tripin.example>"
    [row] = resends(clean)
    assert (row["kind"], row["status"], row["source"]) == ("invoice", "sent", "cli")
    again = antrian("bookings", "show", code).stdout
    assert f"#{row['id']} by cli" in again and smtp_server.messages[1]["Message-ID"] in again


def test_bad_input_is_one_line_and_an_exit_code_and_changes_nothing(web, auth, clean):
    # Given a booking whose invoice was never sent (no mailer runs)
    tour = create_tour(web, auth, quota=10)
    code = book(web, auth, tour["id"], quantity=1).json()["code"]
    outbox_drained(clean)

    for args, says in [
        (("bookings", "resend", "XXXX-XXXX", "invoice"), "Error: booking XXXX-XXXX not found"),
        (("bookings", "resend", "999999", "invoice"), "Error: booking 999999 not found"),
        (("bookings", "resend", code, "receipt"), "Error: unknown email kind 'receipt': give invoice, eticket"),
        (("bookings", "resend", code, "eticket"), f"Error: booking {code} was never sent its eticket email"),
        (("bookings", "resend", code, "invoice"), f"Error: booking {code} was never sent its invoice email"),
        (("bookings", "show", "xxxx-xxxx"), "Error: booking XXXX-XXXX not found"),
    ]:
        # When support gives it
        result = antrian(*args)
        # Then one line says why, with a non-zero exit code
        assert result.returncode != 0, (args, result.stdout)
        assert result.stdout == "" and result.stderr.count("\n") == 1, (args, result.stderr)
        assert result.stderr.startswith(says), (args, result.stderr)
    # And nothing was recorded, and nothing queued besides the booking's own invoice
    assert resends(clean) == []
    outbox_drained(clean)
    assert [m["actor_name"] for m in take_messages(EMAILS_QUEUE)] == [SEND_INVOICE_EMAIL.actor]
