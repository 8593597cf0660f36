"""``/api/tours`` and ``/api/bookings``: seats are taken at once, the invoice is queued with the booking."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import Connection

from antrian.bookings import emails, records
from sync_api.bookings import booking as bookings
from sync_api.bookings import idempotency
from sync_api.bookings.metrics import BOOKINGS_CREATED
from sync_api.bookings.schemas import (
    Booking,
    BookingCreated,
    BookingHeaders,
    Bookings,
    BookingsQuery,
    NewBooking,
    NewTour,
    ResendQueued,
    Tour,
)
from sync_api.web import auth
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import documented
from sync_api.web.validation import MAX_ID

bp = Blueprint("bookings", __name__, url_prefix="/api")
bp.before_request(auth.require_by_method)
#: What an ``Idempotency-Key`` is scoped to (with the caller).
BOOKINGS_ROUTE = "POST /api/bookings"
#: The booking's fields that ``POST /api/bookings`` answers with.
BOOKING_ANSWER = ("id", "code", "status", "total_amount", "expires_at", "tour_id", "quantity")


@bp.post("/tours")
@documented(tags=("bookings",), body=NewTour, ok={"HTTP_201": Tour}, errors=(400,))
def create_tour(json: NewTour):
    """Add a tour with its seats on sale."""
    tour = bookings.create_tour(
        get_engine(), name=json.name, quota=json.quota, price=json.price, starts_at=json.starts_at
    )
    return jsonify(tour), 201


@bp.post("/bookings")
@documented(tags=("bookings",), body=NewBooking, headers=BookingHeaders, ok={"HTTP_201": BookingCreated},
            errors=(400, 404, 409, 422))
def create_booking(json: NewBooking):
    """Book seats (taken at once; the invoice email is queued); with an ``Idempotency-Key`` header, once per key.

    The same key and body answers the first booking again with ``Idempotent-Replayed: true``; the same key
    with another body is a 422. A tour whose row stays locked answers 503 with ``Retry-After``.
    """
    key = idempotency.parse_key(request.headers.getlist(idempotency.HEADER))
    body = request.get_json()
    tour_id, quantity = json.tour_id, json.quantity
    customer_name, customer_email = json.customer_name, json.customer_email
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
        answer = idempotency.once(get_engine(), route=BOOKINGS_ROUTE, key=key, body=body, work=book,
                                  caller=auth.actor().operator)
    if answer.replayed:
        return jsonify(answer.body), answer.status, {idempotency.REPLAYED_HEADER: "true"}
    BOOKINGS_CREATED.inc()
    return jsonify(answer.body), answer.status


@bp.get(f"/bookings/<int(max={MAX_ID}):booking_id>")
@documented(tags=("bookings",), ok={"HTTP_200": Booking}, errors=(404,))
def show_booking(booking_id: int):
    """One booking, with the emails it was sent (each kind's, and every resend) and when."""
    booking = records.get_booking(get_engine(), booking_id)
    if booking is None:
        raise records.BookingNotFound(booking_id)
    return jsonify({**booking, "emails": emails.history(get_engine(), booking_id)})


@bp.get("/bookings")
@documented(tags=("bookings",), query=BookingsQuery, ok={"HTTP_200": Bookings}, errors=(400,))
def find_bookings(query: BookingsQuery):
    """Bookings newest first; with ``?code=``, the booking with that code (an empty list when none has it)."""
    items, total = records.find_by_code(get_engine(), query.code, limit=query.limit, offset=query.offset)
    return jsonify({"items": items, "total": total})


@bp.post(f"/bookings/<int(max={MAX_ID}):booking_id>/emails/<any({', '.join(emails.KINDS)}):kind>/resend")
@documented(tags=("bookings",), ok={"HTTP_202": ResendQueued}, errors=(404, 409))
def resend_email(booking_id: int, kind: str):
    """Send the booking's email of ``kind`` once more (recorded as a resend; the mailer sends it once).

    409 when that email was never sent to this booking, or no longer applies (an e-ticket of a booking no
    longer paid, an invoice of one no longer pending).
    """
    queued = emails.resend(get_engine(), booking_id, kind, by=auth.actor())
    return jsonify(queued), 202

