"""Payment notifications (Midtrans format) through the real sync-api, PostgreSQL and RabbitMQ."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import text

from tests.support import outbox_drained, payment_gateway, queue_depth, take_messages, wait_until
from tests.sync_api.bookings.helpers import book, create_tour, notification, notify, post_notification


@pytest.fixture
def web(clean, start_web):
    return start_web(PAYMENT_SIMULATOR="true")


def booking_state(engine, booking_id) -> dict:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT b.status, b.paid_at, t.quota, (SELECT count(*) FROM payments p WHERE p.booking_id = b.id) "
                 "AS payments FROM bookings b JOIN tours t ON t.id = b.tour_id WHERE b.id = :id"),
            {"id": booking_id},
        ).one()
    return dict(row._mapping)


def new_booking(web, auth, *, quota_=10, quantity=2, queue_invoice_drained=True) -> dict:
    tour = create_tour(web, auth, quota=quota_, price=750_000)
    booking = book(web, auth, tour["id"], quantity=quantity).json()
    if queue_invoice_drained:
        wait_until(lambda: queue_depth("emails") == 1, timeout=10, what="the invoice message")
        take_messages("emails")
    return {**booking, "tour_id": tour["id"]}


def test_settlement_marks_paid_and_queues_one_eticket_and_a_repeat_changes_nothing(web, auth, engine):
    booking = new_booking(web, auth)
    body = notification(booking["code"], "settlement", booking["total_amount"])
    first = notify(web, body)
    assert first.status_code == 200 and first.json()["outcome"] == "paid", first.text
    state = booking_state(engine, booking["id"])
    assert state["status"] == "paid" and state["paid_at"] is not None and state["quota"] == 8
    wait_until(lambda: queue_depth("emails") == 1, timeout=10, what="the e-ticket message")

    again = notify(web, body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert booking_state(engine, booking["id"]) == state
    [message] = take_messages("emails")
    assert (message["actor_name"], message["args"]) == ("send_eticket_email", [booking["id"]])
    assert queue_depth("emails") == 0


@pytest.mark.parametrize(
    ("transaction_status", "fraud_status", "status"),
    [("capture", "accept", "paid"), ("capture", "challenge", "pending"), ("pending", None, "pending"),
     ("expire", None, "expired"), ("cancel", None, "cancelled"), ("deny", None, "cancelled")],
)
def test_each_transaction_status_does_what_it_says(web, auth, engine, transaction_status, fraud_status, status):
    booking = new_booking(web, auth)
    extra = {"fraud_status": fraud_status} if fraud_status else {}
    body = notification(booking["code"], transaction_status, booking["total_amount"], **extra)
    for _ in range(2):  # the second time changes nothing
        assert notify(web, body).status_code == 200
        state = booking_state(engine, booking["id"])
        assert state["status"] == status and state["payments"] == 1
        # Seats come back exactly once when the booking ends; they stay taken otherwise.
        assert state["quota"] == (10 if status in ("expired", "cancelled") else 8)


def test_a_challenged_card_capture_is_paid_when_the_merchant_accepts_it(web, auth, engine):
    booking = new_booking(web, auth)
    challenged = notification(booking["code"], "capture", booking["total_amount"], fraud_status="challenge")
    assert notify(web, challenged).json()["outcome"] == "pending"
    accepted = notify(web, {**challenged, "fraud_status": "accept"})
    assert accepted.json() == {**accepted.json(), "outcome": "paid", "duplicate": False}
    state = booking_state(engine, booking["id"])
    assert state["status"] == "paid" and state["payments"] == 2


def test_concurrent_notifications_for_one_booking_act_once(web, auth, engine):
    # The gateway retrying the same settlement at once: one booking paid, one e-ticket, one payment row.
    booking = new_booking(web, auth)
    body = notification(booking["code"], "settlement", booking["total_amount"])
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: notify(web, body), range(12)))
    assert [answer.status_code for answer in answers] == [200] * 12
    assert sorted(answer.json()["outcome"] for answer in answers) == ["duplicate"] * 11 + ["paid"]
    assert booking_state(engine, booking["id"])["payments"] == 1
    outbox_drained(engine)  # every message the notifications wrote is published: nothing more can come
    assert [message["actor_name"] for message in take_messages("emails")] == ["send_eticket_email"]

    # An old expire notification and the settlement racing, the gateway saying settled: whatever arrives first,
    # only what the gateway confirms is applied, so the seats are taken once and the booking ends paid.
    for _ in range(10):
        racing = new_booking(web, auth, quota_=2, quantity=2)
        stale = notification(racing["code"], "expire", racing["total_amount"])
        settled = notification(racing["code"], "settlement", racing["total_amount"])
        payment_gateway().record(racing["code"], {key: settled[key] for key in (
            "transaction_status", "transaction_id", "gross_amount", "status_code")})
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(lambda body: post_notification(web, body), [stale, settled]))
        assert sorted(answer.json()["outcome"] for answer in answers) == ["duplicate", "paid"]
        state = booking_state(engine, racing["id"])
        assert state["status"] == "paid" and state["quota"] == 0 and state["payments"] == 1
        # Its e-ticket is relayed a moment later: taken here, so the next booking's invoice is alone on the queue
        wait_until(lambda: queue_depth("emails") >= 1, timeout=10, what="the racing booking's e-ticket")
        assert [message["actor_name"] for message in take_messages("emails")] == ["send_eticket_email"]


def test_a_settlement_after_expiry_takes_the_seats_again_or_records_money_to_refund(web, auth, engine):
    lucky = new_booking(web, auth, quota_=2, quantity=2)
    assert notify(web, notification(lucky["code"], "expire", lucky["total_amount"])).status_code == 200
    assert booking_state(engine, lucky["id"])["quota"] == 2
    late = notify(web, notification(lucky["code"], "settlement", lucky["total_amount"]))
    assert late.json()["outcome"] == "paid_after_expiry"
    assert booking_state(engine, lucky["id"])["status"] == "paid" and booking_state(engine, lucky["id"])["quota"] == 0
    wait_until(lambda: queue_depth("emails") == 1, timeout=10, what="the late e-ticket")
    take_messages("emails")

    unlucky = new_booking(web, auth, quota_=2, quantity=2)
    notify(web, notification(unlucky["code"], "expire", unlucky["total_amount"]))
    other = book(web, auth, unlucky["tour_id"], quantity=2)  # someone else takes the seats meanwhile
    assert other.status_code == 201
    late = notify(web, notification(unlucky["code"], "settlement", unlucky["total_amount"]))
    assert late.status_code == 200 and late.json()["outcome"] == "refund_due"
    state = booking_state(engine, unlucky["id"])
    assert state["status"] == "expired" and state["quota"] == 0 and state["payments"] == 2
    metrics = requests.get(web.metrics).text
    assert "antrian_payments_refund_due 1.0" in metrics
    assert 'antrian_payments_total{outcome="refund_due"} 1.0' in metrics


def test_bad_notifications_get_a_clear_4xx_and_change_nothing(web, auth, engine):
    booking = new_booking(web, auth)
    good = notification(booking["code"], "settlement", booking["total_amount"])
    cases = [
        ({**good, "signature_key": "0" * 128}, 401, "signature"),
        (notification(booking["code"], "settlement", booking["total_amount"], key="another-key"), 401, "signature"),
        (notification(booking["code"], "settlement", "1.00"), 400, "gross_amount"),
        (notification("NOPE-NOPE", "settlement", booking["total_amount"]), 404, "NOPE-NOPE"),
        ({k: v for k, v in good.items() if k != "order_id"}, 400, "order_id"),
        ({**good, "gross_amount": 750000}, 400, "gross_amount"),
        (notification(booking["code"], "settlement", "lots"), 400, "gross_amount"),
        (notification(booking["code"], "settlement", "sNaN"), 400, "gross_amount"),
    ]
    for body, status, words in cases:
        response = notify(web, body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["error"], response.text
    malformed = requests.post(f"{web}/api/payments/notification", data="{not json")
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed JSON body"
    state = booking_state(engine, booking["id"])
    assert state == {"status": "pending", "paid_at": None, "quota": 8, "payments": 0}
    assert queue_depth("emails") == 0


def test_the_simulator_settles_a_booking_only_when_enabled(web, auth, engine, start_web):
    booking = new_booking(web, auth)
    assert requests.post(f"{web}/api/payments/simulate", json={"code": booking["code"]}).status_code == 401
    assert requests.post(f"{web}/api/payments/simulate", headers=auth, json={"code": "XXXX-XXXX"}).status_code == 404
    response = requests.post(f"{web}/api/payments/simulate", headers=auth, json={"code": booking["code"]})
    assert response.status_code == 200 and response.json()["status"] == "paid"
    assert booking_state(engine, booking["id"])["status"] == "paid"

    disabled = start_web(PAYMENT_SIMULATOR="false")
    refused = requests.post(f"{disabled}/api/payments/simulate", headers=auth, json={"code": booking["code"]})
    assert refused.status_code == 404 and "PAYMENT_SIMULATOR" in refused.json()["error"]


@pytest.fixture
def gateway():
    """The development gateway every sync-api of the tests asks; healed after the test."""
    gateway = payment_gateway()
    yield gateway
    gateway.heal()


def e_tickets() -> list[dict]:
    return [message for message in take_messages("emails") if message["actor_name"] == "send_eticket_email"]


def test_a_settlement_forged_from_a_signed_notification_of_the_same_order_changes_nothing(web, auth, engine, gateway):
    # Given a booking whose order expired at the gateway, and its signed expire notification, seen by an attacker
    booking = new_booking(web, auth)
    expired = notification(booking["code"], "expire", booking["total_amount"])
    assert notify(web, expired).json()["outcome"] == "expired"
    # and another booking whose order is still pending, with its signed pending notification
    waiting = new_booking(web, auth)
    pending = notification(waiting["code"], "pending", waiting["total_amount"])
    assert notify(web, pending).json()["outcome"] == "pending"
    before = (booking_state(engine, booking["id"]), booking_state(engine, waiting["id"]))

    # When the attacker re-posts them as settlements, or with any other unsigned field changed
    forgeries = [
        {**expired, "transaction_status": "settlement", "transaction_id": "forged-1"},
        {**pending, "transaction_status": "settlement"},
        {**pending, "transaction_status": "capture", "fraud_status": "accept"},
    ]
    for forged in forgeries:
        response = post_notification(web, forged)
        assert response.status_code == 400 and "does not go with transaction_status" in response.json()["error"]
    # (an unsigned field that agrees with the signed status code: the gateway is asked, and says pending)
    for forged in ({**pending, "transaction_id": "forged-2"}, {**pending, "fraud_status": "accept"},
                   {**pending, "payment_type": "credit_card", "settlement_time": "2026-12-02 10:00:00"}):
        response = post_notification(web, forged)
        assert response.status_code == 200 and response.json()["status"] == "pending", response.text

    # Then nothing was paid, no seat moved, and no e-ticket goes out
    assert (booking_state(engine, booking["id"]), booking_state(engine, waiting["id"])) == before
    outbox_drained(engine)
    assert e_tickets() == []
    # And nothing of the signature is stored
    with engine.connect() as connection:
        payloads = connection.execute(text("SELECT payload::text FROM payments")).scalars().all()
    assert payloads and not any("signature_key" in payload for payload in payloads)

    # While a real settlement still works: the gateway settles the pending order and says so
    paid = notify(web, notification(waiting["code"], "settlement", waiting["total_amount"]))
    assert paid.status_code == 200 and paid.json()["outcome"] == "paid"
    outbox_drained(engine)
    assert [message["args"] for message in e_tickets()] == [[waiting["id"]]]


def test_the_status_api_down_is_a_503_that_changes_nothing_and_the_gateways_retry_settles_once(
    web, auth, engine, gateway
):
    booking = new_booking(web, auth)
    body = notification(booking["code"], "settlement", booking["total_amount"])
    # The status API answering 5xx, then not answering in time: 503, so the gateway tries again; nothing changed
    gateway.fail(status=502, count=1)
    failed = notify(web, body)
    assert failed.status_code == 503 and "payment gateway" in failed.json()["error"]
    gateway.fail(delay_s=12, count=1)  # longer than the client's 10 s read timeout
    hung = notify(web, body)
    assert hung.status_code == 503
    assert booking_state(engine, booking["id"]) == {"status": "pending", "paid_at": None, "quota": 8, "payments": 0}

    # Back up: the gateway's retry settles the booking once, and its next retry changes nothing
    gateway.heal()
    assert notify(web, body).json()["outcome"] == "paid"
    assert notify(web, body).json()["duplicate"] is True
    state = booking_state(engine, booking["id"])
    assert state["status"] == "paid" and state["payments"] == 1 and state["quota"] == 8
    outbox_drained(engine)
    assert len(e_tickets()) == 1


def test_an_order_the_gateway_does_not_know_changes_nothing(web, auth, engine, gateway):
    booking = new_booking(web, auth)
    body = notification(booking["code"], "settlement", booking["total_amount"])
    response = post_notification(web, body)  # the gateway was told nothing of this order
    assert response.status_code == 404 and "the payment gateway knows no transaction" in response.json()["error"]
    assert booking_state(engine, booking["id"])["status"] == "pending"


def email_actors() -> list[str]:
    return [message["actor_name"] for message in take_messages("emails")]


@pytest.mark.parametrize("money_back", ["refund", "chargeback", "cancel"])
def test_money_going_back_refunds_the_booking_gives_its_seats_back_and_sends_one_cancellation(
    web, auth, engine, money_back
):
    # Given a paid booking (2 of 10 seats) for a tour that has not started
    booking = new_booking(web, auth)
    assert notify(web, notification(booking["code"], "settlement", booking["total_amount"])).json()["outcome"] == "paid"
    outbox_drained(engine)
    assert email_actors() == ["send_eticket_email"]

    # When the gateway says the money went back (a refund, a chargeback, or a cancel after settlement), twice
    back = notification(booking["code"], money_back, booking["total_amount"])
    assert [notify(web, back).json()["outcome"] for _ in range(2)] == ["refunded", "duplicate"]

    # Then the booking is refunded with its seats back, recorded once, and one cancellation email is queued
    state = booking_state(engine, booking["id"])
    assert state["status"] == "refunded" and state["quota"] == 10 and state["payments"] == 2
    outbox_drained(engine)
    assert email_actors() == ["send_cancellation_email"]
    with engine.connect() as connection:
        recorded = connection.execute(text(
            "SELECT transaction_status, transaction_id, outcome FROM payments WHERE booking_id = :id ORDER BY id"),
            {"id": booking["id"]}).all()
    assert [tuple(row) for row in recorded] == [
        ("settlement", f"tx-{booking['code']}", "paid"), (money_back, f"tx-{booking['code']}", "refunded")]


def test_a_partial_refund_leaves_the_booking_and_its_ticket_and_a_refund_of_a_started_tour_keeps_its_seats(
    web, auth, engine
):
    booking = new_booking(web, auth)
    notify(web, notification(booking["code"], "settlement", booking["total_amount"]))
    partial = notify(web, notification(booking["code"], "partial_refund", booking["total_amount"]))
    assert partial.json()["outcome"] == "partially_refunded"
    state = booking_state(engine, booking["id"])
    assert state["status"] == "paid" and state["quota"] == 8

    # A tour that has started: the refunded booking's seats are gone with it
    with engine.begin() as connection:
        connection.execute(text("UPDATE tours SET starts_at = now() - interval '1 hour' WHERE id = :id"),
                           {"id": booking["tour_id"]})
    refunded = notify(web, notification(booking["code"], "refund", booking["total_amount"]))
    assert refunded.json()["outcome"] == "refunded"
    state = booking_state(engine, booking["id"])
    assert state["status"] == "refunded" and state["quota"] == 8
    outbox_drained(engine)
    take_messages("emails")


def test_a_refund_of_money_owed_back_after_expiry_closes_it(web, auth, engine):
    # Given a booking paid after it expired and its seats were sold: money to refund
    booking = new_booking(web, auth, quota_=2, quantity=2)
    notify(web, notification(booking["code"], "expire", booking["total_amount"]))
    assert book(web, auth, booking["tour_id"], quantity=2).status_code == 201
    late = notify(web, notification(booking["code"], "settlement", booking["total_amount"]))
    assert late.json()["outcome"] == "refund_due"
    # When the agency refunds it at the gateway
    assert notify(web, notification(booking["code"], "refund", booking["total_amount"])).json()["outcome"] == "refunded"
    # Then it is refunded, no seat moved (it held none), and no money is owed any more
    state = booking_state(engine, booking["id"])
    assert state["status"] == "refunded" and state["quota"] == 0
    outbox_drained(engine)
    take_messages("emails")
