"""A booking looked up by its code with the emails it was sent, and one of them sent once more on purpose:
sync-api, the outbox, RabbitMQ, a real mailer and a real SMTP server."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import text

from antrian.messages import RESEND_BOOKING_EMAIL
from antrian.runtime.broker import make_broker
from tests.support import outbox_drained, settings_for_tests, settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour, notification, notify


@pytest.fixture
def web(clean, start_web):
    return start_web(BOOKING_EXPIRY_MINUTES="30")


def resends(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(
            text("SELECT id, booking_id, kind, status, attempts, message_id, source FROM email_resends ORDER BY id"))]


def resend(web, auth, booking_id, kind):
    return requests.post(f"{web}/api/bookings/{booking_id}/emails/{kind}/resend", headers=auth, timeout=10)


def test_a_booking_is_found_by_its_code_with_its_emails_and_a_resend_sends_exactly_one_more(
    web, auth, smtp_server, start_mailer, clean
):
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=2).json()
    code, booking_id = booking["code"], booking["id"]
    other = book(web, auth, tour["id"], quantity=1).json()
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=20, what="both invoices")
    # The SMTP server has an email before the mailer records it sent (after the server's reply): wait for that too
    outbox_drained(clean)
    settled()

    # Looked up by its code (as a customer reads it over the phone: lower case, spaces around it)
    found = requests.get(f"{web}/api/bookings", params={"code": f"  {code.lower()} "}, headers=auth, timeout=10)
    assert found.status_code == 200 and found.json()["total"] == 1
    [item] = found.json()["items"]
    assert (item["id"], item["code"], item["status"]) == (booking_id, code, "pending")
    nothing = requests.get(f"{web}/api/bookings", params={"code": "XXXX-XXXX"}, headers=auth, timeout=10)
    assert nothing.status_code == 200 and nothing.json() == {"items": [], "total": 0}
    every = requests.get(f"{web}/api/bookings", headers=auth, timeout=10).json()
    assert every["total"] == 2 and [b["id"] for b in every["items"]] == [other["id"], booking_id]

    # It says which emails were sent, when, with which Message-ID
    shown = requests.get(f"{web}/api/bookings/{booking_id}", headers=auth, timeout=10).json()
    [invoice] = shown["emails"]
    assert (invoice["kind"], invoice["status"], invoice["attempts"], invoice["resend"]) == ("invoice", "sent", 1, False)
    assert invoice["message_id"] == f"<invoice.{code}@tripin.example>" and invoice["sent_at"]

    # No e-ticket was ever sent for this unpaid booking: 409; an unknown booking: 404; an unknown kind: 404
    refused = resend(web, auth, booking_id, "eticket")
    assert refused.status_code == 409 and "never sent its eticket" in refused.json()["error"]
    assert resend(web, auth, 999_999, "invoice").status_code == 404
    assert resend(web, auth, booking_id, "receipt").status_code == 404

    # When the operator resends the invoice
    queued = resend(web, auth, booking_id, "invoice")
    assert queued.status_code == 202, queued.text
    answer = queued.json()
    assert (answer["booking_id"], answer["code"], answer["kind"], answer["status"]) == (
        booking_id, code, "invoice", "pending")

    # Then exactly one more email goes, with a Message-ID of its own
    wait_until(lambda: len(smtp_server.messages) == 3, timeout=20, what="the resent invoice")
    outbox_drained(clean)
    settled()
    assert len(smtp_server.messages) == 3
    again = smtp_server.messages[2]
    assert code in again["Subject"] and again["To"] == "Budi Santoso <budi@example.com>"
    assert again["Message-ID"] == f"<invoice.{code}.resend-{answer['resend_id']}@tripin.example>"
    [row] = resends(clean)
    assert (row["id"], row["kind"], row["status"], row["attempts"], row["source"]) == (
        answer["resend_id"], "invoice", "sent", 1, "api")
    # The normal delivery is untouched: still one, sent once
    shown = requests.get(f"{web}/api/bookings/{booking_id}", headers=auth, timeout=10).json()
    assert [(e["kind"], e["resend"], e["status"], e["attempts"]) for e in shown["emails"]] == [
        ("invoice", False, "sent", 1), ("invoice", True, "sent", 1)]
    assert shown["emails"][1]["message_id"] == again["Message-ID"] and shown["emails"][1]["source"] == "api"

    # When the resend's message is delivered again (a relay that died before deleting its row, a redelivery)
    settings = settings_for_tests()
    broker = make_broker(settings)
    try:
        RESEND_BOOKING_EMAIL.send(broker, answer["resend_id"])
        RESEND_BOOKING_EMAIL.send(broker, answer["resend_id"])
    finally:
        broker.close()
    settled()
    # Then nothing more is sent
    assert len(smtp_server.messages) == 3
    assert [(r["status"], r["attempts"]) for r in resends(clean)] == [("sent", 1)]

    # A paid booking's e-ticket can be resent; its invoice no longer applies (409)
    paid = notify(web, notification(code, "settlement", booking["total_amount"]))
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    wait_until(lambda: len(smtp_server.messages) == 4, timeout=20, what="the e-ticket")
    settled()  # the e-ticket recorded as sent: only a sent email can be resent
    late_invoice = resend(web, auth, booking_id, "invoice")
    assert late_invoice.status_code == 409 and "is paid" in late_invoice.json()["error"]
    ticket = resend(web, auth, booking_id, "eticket")
    assert ticket.status_code == 202, ticket.text
    wait_until(lambda: len(smtp_server.messages) == 5, timeout=20, what="the resent e-ticket")
    outbox_drained(clean)
    settled()
    assert len(smtp_server.messages) == 5
    resend_id = ticket.json()["resend_id"]
    assert smtp_server.messages[4]["Message-ID"] == f"<eticket.{code}.resend-{resend_id}@tripin.example>"
    assert [(r["kind"], r["status"]) for r in resends(clean)] == [("invoice", "sent"), ("eticket", "sent")]
