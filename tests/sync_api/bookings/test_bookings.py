"""Tours and bookings through the real sync-api (gunicorn), PostgreSQL and RabbitMQ."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests
from sqlalchemy import text

from tests.support import queue_depth, take_messages, wait_until
from tests.sync_api.bookings.helpers import book, create_tour, quota

EXPIRY_MINUTES = 45


@pytest.fixture
def web(clean, start_web):
    return start_web(BOOKING_EXPIRY_MINUTES=str(EXPIRY_MINUTES))


def test_a_booking_takes_its_seats_and_queues_its_invoice_once(web, auth, engine):
    tour = create_tour(web, auth, quota=10)
    assert tour["quota"] == 10 and tour["price"] == "1500000.00"
    assert datetime.fromisoformat(tour["starts_at"]) == datetime.fromisoformat("2026-12-12T04:00:00+07:00")

    response = book(web, auth, tour["id"], quantity=3)
    assert response.status_code == 201, response.text
    booking = response.json()
    assert booking["status"] == "pending" and booking["total_amount"] == "4500000.00"
    code = booking["code"]
    assert len(code) == 9 and code[4] == "-" and not set(code.replace("-", "")) & set("01ILOSB8Z")
    assert quota(engine, tour["id"]) == 7

    shown = requests.get(f"{web}/api/bookings/{booking['id']}", headers=auth).json()
    assert shown["code"] == code and shown["customer_email"] == "budi@example.com" and shown["paid_at"] is None
    created, expires = (datetime.fromisoformat(shown[key]) for key in ("created_at", "expires_at"))
    assert (expires - created).total_seconds() == EXPIRY_MINUTES * 60

    wait_until(lambda: queue_depth("emails") == 1, timeout=10, what="the invoice message on queue emails")
    [message] = take_messages("emails")
    assert (message["actor_name"], message["args"]) == ("send_invoice_email", [booking["id"]])
    # The relay deletes the outbox row in the transaction that waited for RabbitMQ's confirm: a moment after
    def outbox_rows() -> int:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()

    wait_until(lambda: outbox_rows() == 0, timeout=10, what="the outbox row deleted")


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(web, auth, engine):
    tour = create_tour(web, auth, quota=5)
    good = {"tour_id": tour["id"], "quantity": 1, "customer_name": "Budi", "customer_email": "budi@example.com"}
    cases = [
        ({**good, "quantity": 0}, 400, "quantity"),
        ({**good, "quantity": -2}, 400, "quantity"),
        ({**good, "quantity": "2"}, 400, "quantity"),
        ({**good, "quantity": True}, 400, "quantity"),
        ({**good, "quantity": 6}, 409, "seats"),
        ({**good, "tour_id": 999_999}, 404, "tour 999999"),
        ({**good, "tour_id": "one"}, 400, "tour_id"),
        ({**good, "customer_email": "not-an-address"}, 400, "customer_email"),
        ({**good, "customer_email": "a@b.co\r\nBcc: x@y.z"}, 400, "customer_email"),
        ({**good, "customer_email": "root,x@y.z"}, 400, "customer_email"),  # two recipients in a To: header
        ({**good, "customer_email": "root<x@y.z"}, 400, "customer_email"),
        ({**good, "customer_email": "josé@example.com"}, 400, "customer_email"),
        ({**good, "customer_name": "  "}, 400, "customer_name"),
        ({**good, "customer_name": "Budi\u2028Bcc: x@y.z"}, 400, "customer_name"),
        ({k: v for k, v in good.items() if k != "customer_name"}, 400, "customer_name is required"),
        ([good], 400, "JSON object"),
    ]
    for body, status, words in cases:
        response = requests.post(f"{web}/api/bookings", headers=auth, json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["error"], (body, response.text)
    malformed = requests.post(f"{web}/api/bookings", headers=auth, data='{"tour_id": 1,')
    assert malformed.status_code == 400 and malformed.json() == {"error": "malformed JSON body"}
    assert requests.post(f"{web}/api/bookings", json=good).status_code == 401
    huge = requests.post(f"{web}/api/bookings", headers=auth, json={**good, "customer_name": "x" * 100_000})
    assert huge.status_code == 413 and "error" in huge.json()
    assert requests.get(f"{web}/api/bookings/1", headers=auth).status_code == 404

    tour_cases = [
        ({"name": "X", "quota": -1, "price": 1, "starts_at": "2026-12-12T04:00:00+07:00"}, "quota"),
        ({"name": "X", "quota": 1, "price": "1.234", "starts_at": "2026-12-12T04:00:00+07:00"}, "price"),
        ({"name": "X", "quota": 1, "price": -5, "starts_at": "2026-12-12T04:00:00+07:00"}, "price"),
        ({"name": "X", "quota": 1, "price": 5, "starts_at": "2026-12-12T04:00:00"}, "time zone"),
        ({"name": "X", "quota": 1, "price": 5, "starts_at": "soon"}, "starts_at"),
        ({"name": "", "quota": 1, "price": 5, "starts_at": "2026-12-12T04:00:00+07:00"}, "name"),
        ({"name": "X\u2028Y", "quota": 1, "price": 5, "starts_at": "2026-12-12T04:00:00+07:00"}, "name"),
        ({"name": "X", "quota": 1, "price": 1_000_000_000, "starts_at": "2026-12-12T04:00:00+07:00"}, "price"),
        ({"name": "X", "quota": 1, "price": 5, "starts_at": "9999-12-31T23:00:00-05:00"}, "starts_at"),
    ]
    for body, words in tour_cases:
        response = requests.post(f"{web}/api/tours", headers=auth, json=body)
        assert response.status_code == 400 and words in response.json()["error"], (body, response.text)

    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM tours")).scalar_one() == 1
        assert connection.execute(text("SELECT count(*) FROM bookings")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0
    assert quota(engine, tour["id"]) == 5
    assert queue_depth("emails") == 0


def test_300_concurrent_requests_for_the_last_50_seats_sell_exactly_50(web, auth, engine):
    tour = create_tour(web, auth, quota=50)
    session_per_thread = requests.Session

    def attempt(index: int) -> int:
        with session_per_thread() as session:
            body = {"tour_id": tour["id"], "quantity": 1, "customer_name": f"Customer {index}",
                    "customer_email": f"c{index}@example.com"}
            return session.post(f"{web}/api/bookings", headers=auth, json=body, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(attempt, range(300)))
    assert statuses.count(201) == 50 and statuses.count(409) == 250, sorted(set(statuses))
    assert quota(engine, tour["id"]) == 0
    with engine.connect() as connection:
        sold = connection.execute(text("SELECT coalesce(sum(quantity), 0) FROM bookings")).scalar_one()
    assert sold == 50
    # One invoice per booking, none doubled.
    wait_until(lambda: queue_depth("emails") == 50, timeout=20, what="50 invoice messages")
    ids = sorted(message["args"][0] for message in take_messages("emails"))
    with engine.connect() as connection:
        assert ids == connection.execute(text("SELECT id FROM bookings ORDER BY id")).scalars().all()
