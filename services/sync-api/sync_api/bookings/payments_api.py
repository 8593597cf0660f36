"""``/api/payments``: the gateway's notifications (signed, no token, confirmed with the gateway) and the simulator."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from pydantic import ValidationError

from antrian.bookings import payments
from antrian.bookings.gateway import StatusApi
from antrian.errors import InvalidInput, NotFound
from sync_api.bookings.metrics import PAYMENTS
from sync_api.bookings.schemas import PaymentApplied, PaymentNotification, SimulatedPayment
from sync_api.web import auth
from sync_api.web.errors import error
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import PUBLIC, documented
from sync_api.web.validation import clear_message, json_object

logger = logging.getLogger(__name__)

bp = Blueprint("payments", __name__, url_prefix="/api/payments")


@bp.post("/notification")
@documented(tags=("payments",), body=PaymentNotification, checks_itself=True, security=PUBLIC,
            ok={"HTTP_200": PaymentApplied}, errors=(400, 401, 404))
def notification() -> tuple[Response, int] | Response:
    """The gateway's HTTP notification: its ``signature_key`` authenticates it, the gateway's status API confirms it.

    Only what the gateway confirms is applied; the same confirmed status twice changes nothing the second time.
    """
    server_key = current_app.config["ANTRIAN"].payment_server_key
    if not server_key:
        return error(503, "payment notifications are not configured: PAYMENT_SERVER_KEY is unset")
    parsed = payments.Notification.from_json(json_object())
    if not parsed.signature_is_valid(server_key):
        logger.warning("payment notification with a wrong signature", extra={"order_id": parsed.order_id[:64]})
        return error(401, "invalid signature_key")
    parsed.check()
    if payments.total_amount_of(get_engine(), parsed.order_id) is None:
        raise payments.UnknownOrder(parsed.order_id)
    return _confirm_and_apply(parsed.order_id)


@bp.post("/simulate")
@documented(tags=("payments",), body=SimulatedPayment, checks_itself=True, ok={"HTTP_200": PaymentApplied},
            errors=(400, 404))
def simulate() -> tuple[Response, int] | Response:
    """Pay a booking at the development gateway, then act on it as on its notification (only with
    ``PAYMENT_SIMULATOR=true``; otherwise 404)."""
    if not current_app.config["ANTRIAN"].payment_simulator:
        return error(404, "the payment simulator is off (PAYMENT_SIMULATOR=false)")
    refusal = auth.require("operator")
    if refusal is not None:
        return refusal
    code = _simulated_code(json_object())
    total_amount = payments.total_amount_of(get_engine(), code)
    if total_amount is None:
        raise NotFound(f"no booking with code {code!r}")
    _status_api().settle(code, f"{total_amount:.2f}")
    return _confirm_and_apply(code)


def _simulated_code(body: dict) -> str:
    try:
        return SimulatedPayment.model_validate(body).code
    except ValidationError as exc:
        raise InvalidInput(clear_message(exc)) from None


def _status_api() -> StatusApi:
    settings = current_app.config["ANTRIAN"]
    return StatusApi(base_url=settings.payment_status_api_url(), server_key=settings.require("payment_server_key"))


def _confirm_and_apply(order_id: str) -> Response:
    """Ask the gateway what happened to the order and apply that, never the notification's unsigned fields."""
    confirmed = _status_api().status(order_id)
    if confirmed is None:
        logger.warning("a notification for an order the gateway does not know", extra={"order_id": order_id[:64]})
        raise payments.UnknownOrder(order_id, at_gateway=True)
    result = payments.apply(get_engine(), confirmed)
    PAYMENTS.labels("duplicate" if result.duplicate else result.outcome).inc()
    return jsonify(
        {"id": result.booking_id, "code": result.code, "status": result.status, "outcome": result.outcome,
         "duplicate": result.duplicate}
    )
