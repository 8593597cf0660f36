"""Payment notifications (Midtrans format): what each one does to its booking, exactly once.

Every notification for a booking is handled under that booking's row lock, and recorded in
``payments`` with its outcome. The gateway repeats a notification until it gets a 200: a repeat
is recognised by its (order_id, transaction_status, fraud_status, transaction_id) and changes
nothing. ``fraud_status`` belongs to the key: a card ``capture`` held as ``challenge`` is approved
by a second ``capture`` with the same transaction id and ``accept``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, exists, func, insert, select, update

from antrian.bookings import outbox
from antrian.bookings.seats import end_bookings, take_seats
from antrian.db.models import Booking, Payment
from antrian.errors import InvalidInput, NotFound
from antrian.messages import SEND_ETICKET_EMAIL

logger = logging.getLogger(__name__)

#: What a notification asks for, by ``transaction_status`` (``capture`` depends on ``fraud_status``).
PAID, ENDED_EXPIRED, ENDED_CANCELLED, WAIT = "paid", "expired", "cancelled", "pending"
_ASKS = {"settlement": PAID, "expire": ENDED_EXPIRED, "cancel": ENDED_CANCELLED, "deny": ENDED_CANCELLED,
         "pending": WAIT}
_CAPTURE_ASKS = {"accept": PAID, "deny": ENDED_CANCELLED, "challenge": WAIT}

#: Outcomes recorded on each payment and counted in ``antrian_payments_total{outcome}``.
OUTCOMES = ("paid", "paid_after_expiry", "refund_due", "expired", "cancelled", "pending", "ignored")


class InvalidNotification(InvalidInput):
    """Raised when a notification lacks a field or has one of the wrong type."""


class UnknownOrder(NotFound):
    """Raised when a notification names an order that no booking has."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"no booking with order_id {order_id!r}")


class AmountMismatch(InvalidInput):
    """Raised when a notification's amount is not the booking's total."""

    def __init__(self, gross_amount: Decimal, total_amount: Decimal) -> None:
        super().__init__(
            f"gross_amount {gross_amount:.2f} does not match the booking's total_amount {total_amount:.2f}"
        )


@dataclass(frozen=True)
class Notification:
    order_id: str
    status_code: str
    gross_amount: str
    transaction_status: str
    fraud_status: str
    transaction_id: str
    signature_key: str
    payload: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Notification:
        """Raises :class:`InvalidNotification` naming the first missing or malformed field."""
        fields = {}
        for name in ("order_id", "status_code", "gross_amount", "transaction_status", "signature_key"):
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise InvalidNotification(f"{name} is required and must be a string")
            fields[name] = value
        for name in ("fraud_status", "transaction_id"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise InvalidNotification(f"{name} must be a string")
        optional = {name: body.get(name) or "" for name in ("fraud_status", "transaction_id")}
        return cls(**fields, **optional, payload=body)

    def signature_is_valid(self, server_key: str) -> bool:
        """SHA-512 of order_id + status_code + gross_amount + server key, compared in constant time."""
        expected = hashlib.sha512(
            (self.order_id + self.status_code + self.gross_amount + server_key).encode()
        ).hexdigest()
        return hmac.compare_digest(expected.encode(), self.signature_key.lower().encode())

    def amount(self) -> Decimal:
        try:
            amount = Decimal(self.gross_amount)
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            raise InvalidNotification("gross_amount must be a number")
        return amount

    def asks(self) -> str | None:
        """PAID, ENDED_EXPIRED, ENDED_CANCELLED, WAIT, or None for anything else (refunds, ...)."""
        if self.transaction_status == "capture":
            return _CAPTURE_ASKS.get(self.fraud_status)
        return _ASKS.get(self.transaction_status)


@dataclass(frozen=True)
class Result:
    booking_id: int
    code: str
    status: str
    outcome: str
    duplicate: bool


def settlement_for(code: str, total_amount: Decimal) -> Notification:
    """The notification the simulator stands in for: a settlement of the whole amount."""
    gross = f"{total_amount:.2f}"
    payload = {"order_id": code, "status_code": "200", "gross_amount": gross,
               "transaction_status": "settlement", "transaction_id": "simulator", "simulated": True}
    return Notification(order_id=code, status_code="200", gross_amount=gross, transaction_status="settlement",
                        fraud_status="", transaction_id="simulator", signature_key="", payload=payload)


def total_amount_of(engine: Engine, code: str) -> Decimal | None:
    with engine.connect() as connection:
        return connection.execute(select(Booking.total_amount).where(Booking.code == code)).scalar_one_or_none()


def apply(engine: Engine, notification: Notification) -> Result:
    """Apply one (signature-checked) notification to its booking; raises UnknownOrder or AmountMismatch."""
    gross_amount = notification.amount()
    with engine.begin() as connection:
        booking = connection.execute(
            select(Booking.id, Booking.code, Booking.tour_id, Booking.quantity, Booking.total_amount, Booking.status)
            .where(Booking.code == notification.order_id)
            # NO KEY UPDATE: a mailer sending this booking's email holds KEY SHARE on it (its delivery
            # row's foreign key) for as long as SMTP takes; a plain FOR UPDATE would wait for that.
            .with_for_update(key_share=True)
        ).one_or_none()
        if booking is None:
            raise UnknownOrder(notification.order_id)
        if gross_amount != booking.total_amount:
            raise AmountMismatch(gross_amount, booking.total_amount)
        if _seen(connection, notification):
            return Result(booking.id, booking.code, booking.status, "duplicate", duplicate=True)
        outcome, status = _act(connection, booking, notification.asks())
        connection.execute(
            insert(Payment).values(
                booking_id=booking.id,
                order_id=notification.order_id,
                transaction_id=notification.transaction_id,
                transaction_status=notification.transaction_status,
                fraud_status=notification.fraud_status,
                status_code=notification.status_code,
                gross_amount=gross_amount,
                outcome=outcome,
                payload=notification.payload,
            )
        )
    _log(booking, notification, outcome, status)
    return Result(booking.id, booking.code, status, outcome, duplicate=False)


def _seen(connection: Connection, notification: Notification) -> bool:
    return connection.execute(
        select(
            exists().where(
                Payment.order_id == notification.order_id,
                Payment.transaction_status == notification.transaction_status,
                Payment.fraud_status == notification.fraud_status,
                Payment.transaction_id == notification.transaction_id,
            )
        )
    ).scalar_one()


def _act(connection: Connection, booking, asks: str | None) -> tuple[str, str]:
    """Change the (locked) booking as the notification asks; return (outcome, booking status)."""
    if asks == PAID:
        if booking.status == "paid":
            return "ignored", "paid"
        if booking.status == "pending":
            _mark_paid(connection, booking.id)
            return "paid", "paid"
        # Paid after it expired or was cancelled: the customer gets the seats back if they are still free.
        if take_seats(connection, booking.tour_id, booking.quantity) is not None:
            _mark_paid(connection, booking.id)
            return "paid_after_expiry", "paid"
        return "refund_due", booking.status
    if asks in (ENDED_EXPIRED, ENDED_CANCELLED):
        if booking.status == "pending":
            end_bookings(connection, [booking.id], asks)
            return asks, asks
        return "ignored", booking.status
    if asks == WAIT:
        return "pending", booking.status
    return "ignored", booking.status


def _mark_paid(connection: Connection, booking_id: int) -> None:
    connection.execute(update(Booking).where(Booking.id == booking_id).values(status="paid", paid_at=func.now()))
    outbox.add(connection, SEND_ETICKET_EMAIL, booking_id)


def _log(booking, notification: Notification, outcome: str, status: str) -> None:
    extra = {"code": booking.code, "booking_id": booking.id, "transaction_status": notification.transaction_status,
             "outcome": outcome, "status": status, "gross_amount": notification.gross_amount}
    if outcome == "refund_due":
        logger.warning("payment for booking %s arrived after it %s and its seats are gone: refund %s",
                       booking.code, booking.status, notification.gross_amount, extra=extra)
    else:
        logger.info("payment notification for booking %s: %s", booking.code, outcome, extra=extra)
