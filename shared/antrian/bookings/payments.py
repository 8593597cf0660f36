"""Payments (Midtrans format): what the gateway confirms for an order does to its booking, exactly once.

A notification is a hint, never the truth: its signature covers only ``order_id``, ``status_code``
and ``gross_amount``, so anyone who saw one signed notification of an order could re-post it with
another ``transaction_status``. A notification is therefore checked (signature, a ``status_code``
that agrees with its ``transaction_status``) and then the gateway's status API is asked what
happened to the order (:mod:`antrian.bookings.gateway`); only that answer is applied.

Every confirmed status of a booking is applied under that booking's row lock, and recorded in
``payments`` with its outcome and the gateway's answer. A repeat is recognised by what the
gateway confirmed, (order_id, transaction_status, fraud_status, transaction_id), and changes
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
from antrian.bookings.seats import end_bookings, give_back_seats, take_seats
from antrian.db.models import Booking, Payment
from antrian.errors import InvalidInput, NotFound
from antrian.messages import SEND_CANCELLATION_EMAIL, SEND_ETICKET_EMAIL

logger = logging.getLogger(__name__)

#: What a notification asks for, by ``transaction_status`` (``capture`` depends on ``fraud_status``).
PAID, ENDED_EXPIRED, ENDED_CANCELLED, WAIT = "paid", "expired", "cancelled", "pending"
#: Money going back: all of it (the booking ends ``refunded``), or part of it (the booking stays as it is).
REFUNDED, PARTLY_REFUNDED = "refunded", "partially_refunded"
_REFUNDS = {"refund": REFUNDED, "chargeback": REFUNDED, "partial_refund": PARTLY_REFUNDED,
            "partial_chargeback": PARTLY_REFUNDED}
_ASKS = {"settlement": PAID, "expire": ENDED_EXPIRED, "cancel": ENDED_CANCELLED, "deny": ENDED_CANCELLED,
         "pending": WAIT}
_CAPTURE_ASKS = {"accept": PAID, "deny": ENDED_CANCELLED, "challenge": WAIT}

#: Outcomes recorded on each payment and counted in ``antrian_payments_total{outcome}``.
OUTCOMES = ("paid", "paid_after_expiry", "refund_due", "expired", "cancelled", "pending", "refunded",
            "partially_refunded", "ignored")


class InvalidNotification(InvalidInput):
    """Raised when a notification lacks a field or has one of the wrong type."""


class UnknownOrder(NotFound):
    """Raised when an order is named that no booking has (or, ``at_gateway``, that the gateway does not know)."""

    def __init__(self, order_id: str, *, at_gateway: bool = False) -> None:
        where = "the payment gateway knows no transaction" if at_gateway else "no booking"
        super().__init__(f"{where} with order_id {order_id!r}")


class AmountMismatch(InvalidInput):
    """Raised when a notification's amount is not the booking's total."""

    def __init__(self, gross_amount: Decimal, total_amount: Decimal) -> None:
        super().__init__(
            f"gross_amount {gross_amount:.2f} does not match the booking's total_amount {total_amount:.2f}"
        )


#: The ``status_code`` the gateway sends with each ``transaction_status`` (Midtrans' documented codes).
STATUS_CODES = {
    "capture": "200", "settlement": "200", "pending": "201", "deny": "202", "cancel": "200", "expire": "407",
    "refund": "200", "partial_refund": "200", "chargeback": "200", "partial_chargeback": "200", "authorize": "200",
    "failure": "202",
}


@dataclass(frozen=True)
class Notification:
    """The gateway's HTTP notification: only a hint that something happened to ``order_id``."""

    order_id: str
    status_code: str
    gross_amount: str
    transaction_status: str
    signature_key: str

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
        return cls(**fields)

    def signature_is_valid(self, server_key: str) -> bool:
        """SHA-512 of order_id + status_code + gross_amount + server key, compared in constant time."""
        expected = hashlib.sha512(
            (self.order_id + self.status_code + self.gross_amount + server_key).encode()
        ).hexdigest()
        return hmac.compare_digest(expected.encode(), self.signature_key.lower().encode())

    def check(self) -> None:
        """Raise :class:`InvalidNotification` unless ``status_code`` agrees with ``transaction_status``."""
        expected = STATUS_CODES.get(self.transaction_status)
        if expected is not None and self.status_code != expected:
            raise InvalidNotification(
                f"status_code {self.status_code!r} does not go with transaction_status {self.transaction_status!r}"
            )
        _amount(self.gross_amount)


@dataclass(frozen=True)
class TransactionStatus:
    """What the gateway's status API confirmed for an order: the only thing a booking changes by."""

    order_id: str
    transaction_status: str
    fraud_status: str
    transaction_id: str
    status_code: str
    gross_amount: str
    #: The gateway's answer as received, kept in ``payments.payload``.
    payload: dict[str, Any]

    @classmethod
    def from_gateway(cls, body: dict[str, Any]) -> TransactionStatus:
        """Raises ValueError when the answer lacks what a status must carry."""
        values = {}
        for name in ("order_id", "transaction_status", "gross_amount"):
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"the gateway's status has no {name}")
            values[name] = value
        optional = {name: str(body.get(name) or "") for name in ("fraud_status", "transaction_id", "status_code")}
        return cls(**values, **optional, payload=body)

    def amount(self) -> Decimal:
        return _amount(self.gross_amount)

    def asks(self) -> str | None:
        """PAID, ENDED_EXPIRED, ENDED_CANCELLED, WAIT, REFUNDED, PARTLY_REFUNDED, or None for anything else."""
        if self.transaction_status == "capture":
            return _CAPTURE_ASKS.get(self.fraud_status)
        return _ASKS.get(self.transaction_status) or _REFUNDS.get(self.transaction_status)


def _amount(gross_amount: str) -> Decimal:
    try:
        amount = Decimal(gross_amount)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise InvalidNotification("gross_amount must be a number")
    return amount


@dataclass(frozen=True)
class Result:
    booking_id: int
    code: str
    status: str
    outcome: str
    duplicate: bool


def settlement_for(code: str, total_amount: Decimal, *, transaction_id: str = "simulator") -> TransactionStatus:
    """A confirmed settlement of the whole amount (what the development gateway answers once it is paid)."""
    gross = f"{total_amount:.2f}"
    payload = {"order_id": code, "status_code": "200", "gross_amount": gross, "transaction_status": "settlement",
               "transaction_id": transaction_id, "fraud_status": "accept"}
    return TransactionStatus.from_gateway(payload)


def total_amount_of(engine: Engine, code: str) -> Decimal | None:
    with engine.connect() as connection:
        return connection.execute(select(Booking.total_amount).where(Booking.code == code)).scalar_one_or_none()


def apply(engine: Engine, notification: TransactionStatus) -> Result:
    """Apply what the gateway confirmed to its booking; raises UnknownOrder or AmountMismatch."""
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


def _seen(connection: Connection, notification: TransactionStatus) -> bool:
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


def _act(connection: Connection, booking: Any, asks: str | None) -> tuple[str, str]:
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
    if asks == ENDED_CANCELLED and booking.status == "paid":
        asks = REFUNDED  # a cancel after settlement: the money goes back
    if asks in (ENDED_EXPIRED, ENDED_CANCELLED):
        if booking.status == "pending":
            end_bookings(connection, [booking.id], asks)
            return asks, asks
        return "ignored", booking.status
    if asks == REFUNDED:
        if booking.status not in ("paid", "expired", "cancelled"):
            return "ignored", booking.status  # refunded already, or never paid
        # A paid booking holds its seats: they go back unless the tour has started. An expired or cancelled one
        # paid too late (refund_due) holds none.
        if booking.status == "paid":
            give_back_seats(connection, booking.tour_id, booking.quantity)
        connection.execute(update(Booking).where(Booking.id == booking.id).values(status=REFUNDED))
        outbox.add(connection, SEND_CANCELLATION_EMAIL, booking.id)
        return REFUNDED, REFUNDED
    if asks == PARTLY_REFUNDED:
        return PARTLY_REFUNDED, booking.status  # part of the money back: the booking and its ticket stand
    if asks == WAIT:
        return "pending", booking.status
    return "ignored", booking.status


def _mark_paid(connection: Connection, booking_id: int) -> None:
    connection.execute(update(Booking).where(Booking.id == booking_id).values(status="paid", paid_at=func.now()))
    outbox.add(connection, SEND_ETICKET_EMAIL, booking_id)


def _log(booking: Any, notification: TransactionStatus, outcome: str, status: str) -> None:
    extra = {"code": booking.code, "booking_id": booking.id, "transaction_status": notification.transaction_status,
             "outcome": outcome, "status": status, "gross_amount": notification.gross_amount}
    if outcome == "refund_due":
        logger.warning("payment for booking %s arrived after it %s and its seats are gone: refund %s",
                       booking.code, booking.status, notification.gross_amount, extra=extra)
    else:
        logger.info("payment notification for booking %s: %s", booking.code, outcome, extra=extra)
