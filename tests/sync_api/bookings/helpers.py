"""Helpers for tests of tours, bookings and payments: the HTTP calls a customer and the gateway make."""

from __future__ import annotations

import hashlib

import requests
from sqlalchemy import text

from tests.support import PAYMENT_SERVER_KEY


def create_tour(web, auth, *, quota=50, price=1_500_000) -> dict:
    response = requests.post(
        f"{web}/api/tours", headers=auth,
        json={"name": "Bromo Sunrise", "quota": quota, "price": price, "starts_at": "2026-12-12T04:00:00+07:00"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def book(web, auth, tour_id, quantity=2, **fields):
    body = {"tour_id": tour_id, "quantity": quantity, "customer_name": "Budi Santoso",
            "customer_email": "budi@example.com", **fields}
    return requests.post(f"{web}/api/bookings", headers=auth, json=body)


def quota(engine, tour_id) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT quota FROM tours WHERE id = :id"), {"id": tour_id}).scalar_one()


def notification(code: str, transaction_status: str, gross_amount: str, *, key: str = PAYMENT_SERVER_KEY, **extra):
    status_code = {"settlement": "200", "capture": "200", "pending": "201"}.get(transaction_status, "202")
    signature = hashlib.sha512(f"{code}{status_code}{gross_amount}{key}".encode()).hexdigest()
    return {"order_id": code, "status_code": status_code, "gross_amount": gross_amount, "signature_key": signature,
            "transaction_status": transaction_status, "transaction_id": f"tx-{code}", "payment_type": "bank_transfer",
            **extra}


def notify(web, body):
    return requests.post(f"{web}/api/payments/notification", json=body)
