"""Invoices and e-tickets end to end: sync-api, the outbox, RabbitMQ, real mailer processes and a real SMTP server."""

from __future__ import annotations

import io
import re
import signal
import time

import pytest
import requests
import zxingcpp
from PIL import Image
from sqlalchemy import text

from tests.proxy import FreezableProxy
from tests.support import BROKER_URL, queue_depth, rabbitmq_stopped, settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour, notification, notify


@pytest.fixture
def web(clean, start_web):
    return start_web(BOOKING_EXPIRY_MINUTES="30")


def delivery(engine, booking_id: int, kind: str) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, attempts, last_error, message_id FROM email_deliveries "
                 "WHERE booking_id = :id AND kind = :kind"),
            {"id": booking_id, "kind": kind},
        ).one_or_none()
    return None if row is None else dict(row._mapping)


def failed_job(engine):
    with engine.connect() as connection:
        return connection.execute(text("SELECT args, attempts, exception FROM failed_jobs")).one_or_none()


def parts(message) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.walk()
            if part.get_content_type() in ("text/plain", "text/html")}


def test_a_booking_gets_its_invoice_and_a_payment_its_eticket_with_a_qr_code(web, auth, smtp_server, start_mailer):
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10, price=750_000)
    booking = book(web, auth, tour["id"], quantity=2, customer_email="sari@example.com").json()
    code = booking["code"]

    wait_until(lambda: smtp_server.messages, timeout=20, what="the invoice at the SMTP server")
    [invoice] = smtp_server.messages
    assert invoice["To"] == "Budi Santoso <sari@example.com>"
    assert invoice["From"] == "Tripin Travel <tickets@tripin.example>"
    assert code in invoice["Subject"] and invoice["Message-ID"] == f"<invoice.{code}@tripin.example>"
    bodies = parts(invoice)
    assert set(bodies) == {"text/plain", "text/html"}
    for body in bodies.values():
        assert code in body and "Bromo Sunrise" in body and "Rp 1.500.000" in body
        # The deadline: created + 30 minutes, shown in the agency's time (WIB, UTC+7).
        assert "WIB" in body and re.search(r"\b2\b", body)  # two seats
    deadline = requests.get(f"{web}/api/bookings/{booking['id']}", headers=auth).json()["expires_at"]
    hour_minute = _wib_clock(deadline)
    assert hour_minute in bodies["text/plain"] and hour_minute in bodies["text/html"]

    paid = notify(web, notification(code, "settlement", booking["total_amount"]))
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=20, what="the e-ticket at the SMTP server")
    eticket = smtp_server.messages[1]
    assert code in eticket["Subject"] and eticket["Message-ID"] == f"<eticket.{code}@tripin.example>"
    bodies = parts(eticket)
    for body in bodies.values():
        assert code in body and "Bromo Sunrise" in body
    [image] = [part for part in eticket.walk() if part.get_content_type() == "image/png"]
    content_id = image["Content-ID"].strip("<>")
    assert f"cid:{content_id}" in bodies["text/html"]
    [qr] = zxingcpp.read_barcodes(Image.open(io.BytesIO(image.get_content())))
    assert qr.text == code


def _wib_clock(iso: str) -> str:
    from datetime import datetime, timedelta, timezone

    local = datetime.fromisoformat(iso).astimezone(timezone(timedelta(hours=7)))
    return f"{local:%H:%M}"


@pytest.mark.restarts
def test_a_booking_made_while_rabbitmq_is_stopped_gets_its_invoice_once_it_is_back(
    web, auth, smtp_server, start_mailer, engine
):
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    with rabbitmq_stopped():
        response = book(web, auth, tour["id"], quantity=1)
        assert response.status_code == 201, response.text
        time.sleep(1)
        assert smtp_server.messages == []
    wait_until(lambda: smtp_server.messages, timeout=60, what="the invoice after RabbitMQ came back")
    settled()  # nothing in flight: a second copy could not still come
    assert len(smtp_server.messages) == 1 and response.json()["code"] in smtp_server.subjects()[0]
    assert delivery(engine, response.json()["id"], "invoice")["status"] == "sent"


def test_a_mailer_killed_between_sending_and_acknowledging_sends_no_second_email(
    web, auth, smtp_server, start_mailer, engine
):
    # The first mailer reaches RabbitMQ through a proxy that holds back everything it sends once the
    # SMTP server has accepted the email: its ack never arrives, and it is killed with SIGKILL.
    rabbitmq_port = 5672
    proxy = FreezableProxy(rabbitmq_port)
    smtp_server.on_accept = lambda message: proxy.freeze()
    proxied_url = BROKER_URL.replace(f":{rabbitmq_port}/", f":{proxy.port}/")
    first = start_mailer(smtp_server, BROKER_URL=proxied_url)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=1).json()

    wait_until(lambda: (delivery(engine, booking["id"], "invoice") or {}).get("status") == "sent", timeout=30,
               what="the invoice recorded as sent")
    time.sleep(0.5)  # the worker has acked by now, into the frozen proxy
    first.process.send_signal(signal.SIGKILL)
    first.kill()
    proxy.cut()
    wait_until(lambda: queue_depth("emails") == 1, timeout=30, what="RabbitMQ to requeue the unacknowledged message")

    second = start_mailer(smtp_server)
    wait_until(lambda: queue_depth("emails") == 0, timeout=30, what="the redelivered message to be consumed")
    wait_until(lambda: 'result="duplicate"' in requests.get(second.metrics_url).text, timeout=10,
               what="the redelivery counted as a duplicate")
    assert len(smtp_server.messages) == 1
    assert delivery(engine, booking["id"], "invoice")["attempts"] == 1
    proxy.close()


def test_451_twice_then_accepted_is_one_email_after_three_attempts(web, auth, smtp_server, start_mailer, engine):
    smtp_server.replies = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=1).json()
    wait_until(lambda: smtp_server.messages, timeout=60, what="the invoice after two refusals")
    settled()
    assert len(smtp_server.messages) == 1 and smtp_server.attempts == 3
    assert delivery(engine, booking["id"], "invoice")["status"] == "sent"
    assert delivery(engine, booking["id"], "invoice")["attempts"] == 3
    assert queue_depth("emails.XQ") == 0


def test_550_fails_at_once_and_is_kept_as_a_failed_job(web, auth, smtp_server, start_mailer, engine):
    smtp_server.replies = ["550 5.1.1 No such user here"]
    mailer = start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=1).json()
    wait_until(lambda: failed_job(engine), timeout=30, what="the refused invoice kept as a failed job")
    settled()
    assert smtp_server.attempts == 1 and smtp_server.messages == []
    job = failed_job(engine)
    assert job.args == [booking["id"]] and job.attempts == 1 and "550 5.1.1 No such user here" in job.exception
    assert queue_depth("emails.XQ") == 0
    failed = delivery(engine, booking["id"], "invoice")
    assert failed["status"] == "failed" and failed["attempts"] == 1 and "550" in failed["last_error"]
    assert 'antrian_emails_total{kind="invoice",result="failed"} 1.0' in requests.get(mailer.metrics_url).text


def test_an_invoice_for_a_booking_paid_before_it_could_go_is_not_sent(web, auth, smtp_server, start_mailer, engine):
    # The mailer is not running yet (an outage, a long queue): the customer pays meanwhile.
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=1).json()
    paid = notify(web, notification(booking["code"], "settlement", booking["total_amount"]))
    assert paid.json()["status"] == "paid"
    wait_until(lambda: queue_depth("emails") == 2, timeout=10, what="the invoice and e-ticket messages")

    mailer = start_mailer(smtp_server)
    wait_until(lambda: smtp_server.messages, timeout=20, what="the e-ticket")
    wait_until(lambda: queue_depth("emails") == 0, timeout=10, what="both messages handled")
    settled()
    assert [str(message["Message-ID"]) for message in smtp_server.messages] == [
        f"<eticket.{booking['code']}@tripin.example>"
    ]
    assert delivery(engine, booking["id"], "invoice") is None
    assert 'antrian_emails_total{kind="invoice",result="outdated"} 1.0' in requests.get(mailer.metrics_url).text


def test_a_refunded_booking_gets_one_cancellation_email(web, auth, smtp_server, start_mailer, engine):
    start_mailer(smtp_server)
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=2).json()
    wait_until(lambda: len(smtp_server.messages) == 1, timeout=30, what="the invoice")  # before the payment
    assert notify(web, notification(booking["code"], "settlement", booking["total_amount"])).json()["status"] == "paid"
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=30, what="the e-ticket")

    # When the agency refunds it at the gateway, and the gateway notifies twice
    refund = notification(booking["code"], "refund", booking["total_amount"])
    assert [notify(web, refund).json()["outcome"] for _ in range(2)] == ["refunded", "duplicate"]

    # Then one "booking cancelled" email goes out
    wait_until(lambda: len(smtp_server.messages) == 3, timeout=30, what="the cancellation email")
    settled()
    assert len(smtp_server.messages) == 3
    cancellation = smtp_server.messages[2]
    assert cancellation["Subject"].startswith(f"Booking {booking['code']} cancelled")
    assert cancellation["Message-ID"] == f"<cancellation.{booking['code']}@tripin.example>"
    assert delivery(engine, booking["id"], "cancellation")["status"] == "sent"
