"""``/api/payments``: the gateway's notifications (signed, no token) and the development simulator."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from antrian.errors import NotFound
from sync_api.bookings import payments
from sync_api.bookings.metrics import PAYMENTS
from sync_api.web import auth
from sync_api.web.errors import error
from sync_api.web.extensions import get_engine
from sync_api.web.validation import json_object, text_field

logger = logging.getLogger(__name__)

bp = Blueprint("payments", __name__, url_prefix="/api/payments")


@bp.post("/notification")
def notification():
    """The gateway's HTTP notification; authenticated by its signature, not by the API token."""
    server_key = current_app.config["ANTRIAN"].payment_server_key
    if not server_key:
        return error(503, "payment notifications are not configured: PAYMENT_SERVER_KEY is unset")
    parsed = payments.Notification.from_json(json_object())
    if not parsed.signature_is_valid(server_key):
        logger.warning("payment notification with a wrong signature", extra={"order_id": parsed.order_id[:64]})
        return error(401, "invalid signature_key")
    return _apply(parsed)


@bp.post("/simulate")
def simulate():
    """Act as the gateway's settlement notification for a booking (development and demos only)."""
    if not current_app.config["ANTRIAN"].payment_simulator:
        return error(404, "the payment simulator is off (PAYMENT_SIMULATOR=false)")
    refusal = auth.require_token()
    if refusal is not None:
        return refusal
    code = text_field(json_object(), "code", max_length=64)
    total_amount = payments.total_amount_of(get_engine(), code)
    if total_amount is None:
        raise NotFound(f"no booking with code {code!r}")
    return _apply(payments.settlement_for(code, total_amount))


def _apply(parsed: payments.Notification):
    result = payments.apply(get_engine(), parsed)
    PAYMENTS.labels("duplicate" if result.duplicate else result.outcome).inc()
    return jsonify(
        {"id": result.booking_id, "code": result.code, "status": result.status, "outcome": result.outcome,
         "duplicate": result.duplicate}
    )
