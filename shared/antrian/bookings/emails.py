"""A booking's emails: which were sent and when, and one sent once more on purpose (a resend).

A resend is an ``email_resends`` row and its ``resend_booking_email(resend_id)`` outbox row, written in one
transaction: the message leaves only if the resend was recorded, and the mailer sends each row's email once
(its row is locked while sending and marked ``sent`` before the ack), however often the message is delivered.
The ``email_deliveries`` row of the booking and kind, which keeps the normal emails to one each, is only read.
The resend row is also the audit record of the operator's action (``source``, ``requested_at``).
sync-api's routes and the ``antrian bookings`` command both call these.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert, select

from antrian.access import audit
from antrian.access.audit import Actor
from antrian.bookings import outbox
from antrian.bookings.records import BookingNotFound
from antrian.db.models import Booking, EmailDelivery, EmailResend
from antrian.errors import Conflict
from antrian.messages import RESEND_BOOKING_EMAIL

#: The kinds of email a booking gets (``email_deliveries.kind``).
KINDS = ("invoice", "eticket", "cancellation")
#: The status a booking must have for its email of each kind to still be true (as the mailer checks).
STATUS_FOR_KIND = {"invoice": "pending", "eticket": "paid", "cancellation": "refunded"}


class NothingToResend(Conflict):
    """Raised when an email is to be sent again that was never sent, or no longer says what is true."""


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


def history(engine: Engine, booking_id: int) -> list[dict[str, Any]]:
    """The booking's emails, oldest first: each kind's delivery, then each resend."""
    with engine.connect() as connection:
        deliveries = connection.execute(
            select(EmailDelivery).where(EmailDelivery.booking_id == booking_id).order_by(EmailDelivery.created_at)
        ).all()
        resends = connection.execute(
            select(EmailResend).where(EmailResend.booking_id == booking_id).order_by(EmailResend.id)
        ).all()
    return emails_json(deliveries, resends)


def emails_json(deliveries: Any, resends: Any) -> list[dict[str, Any]]:
    items = [
        {"kind": row.kind, "status": row.status, "sent_at": _iso(row.sent_at), "message_id": row.message_id,
         "attempts": row.attempts, "last_error": row.last_error, "resend": False, "resend_id": None,
         "requested_at": _iso(row.created_at), "source": None}
        for row in deliveries
    ]
    items += [
        {"kind": row.kind, "status": row.status, "sent_at": _iso(row.sent_at), "message_id": row.message_id,
         "attempts": row.attempts, "last_error": row.last_error, "resend": True, "resend_id": row.id,
         "requested_at": _iso(row.requested_at), "source": row.source}
        for row in resends
    ]
    return items


def resend(engine: Engine, booking_id: int, kind: str, *, by: Actor) -> dict[str, Any]:
    """Record a resend of the booking's ``kind`` email and queue it through the outbox, in one transaction.

    ``by`` says who asked (audited; its ``via`` is the resend's ``source``). Raises BookingNotFound, or
    NothingToResend when that email was never sent or the booking has moved on (an e-ticket of a booking no
    longer paid, an invoice of one no longer pending).
    """
    with engine.begin() as connection:
        # The booking's row lock: a payment or an expiry changing its status waits for this resend's commit.
        booking = connection.execute(
            select(Booking.id, Booking.code, Booking.status).where(Booking.id == booking_id).with_for_update()
        ).one_or_none()
        if booking is None:
            raise BookingNotFound(booking_id)
        sent = connection.execute(
            select(EmailDelivery.status)
            .where(EmailDelivery.booking_id == booking_id, EmailDelivery.kind == kind, EmailDelivery.status == "sent")
        ).first()
        if sent is None:
            raise NothingToResend(f"booking {booking.code} was never sent its {kind} email: nothing to resend")
        if booking.status != STATUS_FOR_KIND[kind]:
            raise NothingToResend(
                f"booking {booking.code} is {booking.status}: its {kind} email no longer applies, not resent"
            )
        row = connection.execute(
            insert(EmailResend).values(booking_id=booking_id, kind=kind, source=by.via)
            .returning(EmailResend.id, EmailResend.status, EmailResend.requested_at)
        ).one()
        outbox.add(connection, RESEND_BOOKING_EMAIL, row.id)
        audit.record(connection, by, "resend", f"booking:{booking_id}", kind=kind, code=booking.code, resend_id=row.id)
    return {"resend_id": row.id, "booking_id": booking_id, "code": booking.code, "kind": kind,
            "status": row.status, "requested_at": row.requested_at.isoformat()}
