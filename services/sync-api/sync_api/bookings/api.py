"""``/api/tours`` and ``/api/bookings``: seats are taken at once, the invoice is queued with the booking."""

from __future__ import annotations

from decimal import Decimal

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import Connection

from sync_api.bookings import booking as bookings
from sync_api.bookings import idempotency
from sync_api.bookings.metrics import BOOKINGS_CREATED
from sync_api.web import auth
from sync_api.web.extensions import get_engine
from sync_api.web.validation import amount_field, aware_datetime, email_field, json_object, text_field, whole_number

bp = Blueprint("bookings", __name__, url_prefix="/api")
bp.before_request(auth.require_token)

#: Bounds that keep every value inside its column and out of absurdity: a booking's total (price x seats)
#: stays below the column's 1e12.
MAX_QUOTA, MAX_SEATS_PER_BOOKING, PRICE_LIMIT = 100_000, 1_000, Decimal("1e9")
MAX_ID = 2**63 - 1
#: What an ``Idempotency-Key`` is scoped to (with the caller).
BOOKINGS_ROUTE = "POST /api/bookings"
#: The booking's fields that ``POST /api/bookings`` answers with.
BOOKING_ANSWER = ("id", "code", "status", "total_amount", "expires_at", "tour_id", "quantity")


@bp.post("/tours")
def create_tour():
    body = json_object()
    tour = bookings.create_tour(
        get_engine(),
        name=text_field(body, "name", max_length=200),
        quota=whole_number(body, "quota", low=0, high=MAX_QUOTA),
        price=amount_field(body, "price", high=PRICE_LIMIT),
        starts_at=aware_datetime(body, "starts_at"),
    )
    return jsonify(tour), 201


@bp.post("/bookings")
def create_booking():
    """Book; with an ``Idempotency-Key`` header, once per key (``sync_api.bookings.idempotency``)."""
    key = idempotency.parse_key(request.headers.getlist(idempotency.HEADER))
    body = json_object()
    tour_id = whole_number(body, "tour_id", low=1, high=MAX_ID)
    quantity = whole_number(body, "quantity", low=1, high=MAX_SEATS_PER_BOOKING)
    customer_name = text_field(body, "customer_name", max_length=200)
    customer_email = email_field(body, "customer_email")
    expiry_minutes = current_app.config["ANTRIAN"].booking_expiry_minutes

    def book(connection: Connection | None = None) -> idempotency.Answer:
        booking = bookings.create_booking(
            get_engine(),
            tour_id=tour_id,
            quantity=quantity,
            customer_name=customer_name,
            customer_email=customer_email,
            expiry_minutes=expiry_minutes,
            connection=connection,
        )
        return idempotency.Answer(201, {name: booking[name] for name in BOOKING_ANSWER})

    if key is None:
        answer = book()
    else:
        answer = idempotency.once(get_engine(), route=BOOKINGS_ROUTE, key=key, body=body, work=book)
    if answer.replayed:
        return jsonify(answer.body), answer.status, {idempotency.REPLAYED_HEADER: "true"}
    BOOKINGS_CREATED.inc()
    return jsonify(answer.body), answer.status


@bp.get("/bookings/<int:booking_id>")
def show_booking(booking_id: int):
    booking = bookings.get_booking(get_engine(), booking_id) if booking_id <= MAX_ID else None
    if booking is None:
        raise bookings.BookingNotFound(booking_id)
    return jsonify(booking)

