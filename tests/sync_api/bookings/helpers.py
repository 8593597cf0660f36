"""Helpers for tests of tours, bookings and payments: the HTTP calls a customer and the gateway make."""

from __future__ import annotations

import hashlib

import requests
from sqlalchemy import text

from antrian.bookings.payments import STATUS_CODES
from tests.support import PAYMENT_SERVER_KEY, payment_gateway


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
    """A notification as the gateway signs it, with the status code that goes with its transaction status."""
    status_code = extra.pop("status_code", STATUS_CODES.get(transaction_status, "202"))
    signature = hashlib.sha512(f"{code}{status_code}{gross_amount}{key}".encode()).hexdigest()
    return {"order_id": code, "status_code": status_code, "gross_amount": gross_amount, "signature_key": signature,
            "transaction_status": transaction_status, "transaction_id": f"tx-{code}", "payment_type": "bank_transfer",
            **extra}


def notify(web, body):
    """What the gateway does: record what happened to the order (its status API answers that from now on), then
    send the notification."""
    if isinstance(body.get("order_id"), str):
        payment_gateway().record(body["order_id"], {
            name: body[name] for name in ("transaction_status", "fraud_status", "transaction_id", "gross_amount",
                                          "status_code") if name in body})
    return post_notification(web, body)


def post_notification(web, body):
    """A notification posted as it is, the gateway told nothing (a replay, a forgery)."""
    return requests.post(f"{web}/api/payments/notification", json=body, timeout=30)
