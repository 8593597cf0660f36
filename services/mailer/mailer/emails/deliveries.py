"""Exactly one email per booking and kind, ever: its delivery row is locked while sending, marked sent before the ack.

The protocol, in one database transaction:

1. ``INSERT`` the delivery row (booking, kind, Message-ID) ``ON CONFLICT DO NOTHING``;
2. ``SELECT ... FOR UPDATE`` it: a concurrent duplicate of the same job waits here;
3. when it is ``sent`` already, send nothing (a duplicate); else send while holding the lock,
4. ``UPDATE`` it to ``sent`` and ``COMMIT``, and only then return, so Dramatiq acks after the commit.

A failed send rolls that transaction back and records the attempt in a transaction of its own.

One window stays open: the SMTP server accepted the email, then the process died (or lost the
database) before ``COMMIT``. The message is delivered again and so is the email, but with the
same ``Message-ID`` (made from the booking and kind only), by which mail systems recognise a
resend. SMTP has no two-phase commit that could close this window.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from antrian.db.engine import retry_on_disconnect
from antrian.db.models import EmailDelivery, EmailResend
from antrian.rate_limit import RateLimiter
from mailer.emails.bookings import BookingDetails, load_booking
from mailer.emails.metrics import SMTP_SEND_SECONDS
from mailer.emails.render import CANCELLATION, ETICKET, INVOICE, Sender, message_id_for, render, resend_message_id
from mailer.emails.retries import EMAIL
from mailer.errors import BookingNotFound, BookingNotPaid, BookingNotRefunded
from mailer.transport import Transport

logger = logging.getLogger(__name__)

SENT, DUPLICATE, OUTDATED = "sent", "duplicate", "outdated"
#: The status a booking must still have for a resend of its email of each kind (as :meth:`Deliveries.deliver`).
_STATUS_FOR_KIND = {INVOICE: "pending", ETICKET: "paid", CANCELLATION: "refunded"}
#: Characters of an error kept in ``email_deliveries.last_error``.
ERROR_LENGTH = 1000


class Deliveries:
    """Sends each booking's emails once.

    Parameters:
      engine: the database, with transactions (not autocommit): the lock lasts while sending.
      transport: where the emails go.
      sender: the From address, whose domain also ends every Message-ID.
      limiter: gives a token right before each send (``SMTP_RATE_LIMIT``); a throttled email waits for it inside
        its job (holding its delivery row's lock, as while sending), which costs no attempt.
    """

    def __init__(self, *, engine: Engine, transport: Transport, sender: Sender,
                 limiter: RateLimiter | None = None) -> None:
        self.engine = engine
        self.transport = transport
        self.sender = sender
        self.limiter = limiter

    def deliver(self, booking_id: int, kind: str, *, final_attempt: bool) -> str:
        """Send the booking's email of ``kind`` unless it was sent already: ``"sent"`` or ``"duplicate"``.

        ``"outdated"`` when it is an invoice for a booking no longer pending (nothing is sent).

        Raises BookingNotFound, BookingNotPaid (e-tickets), the transport's EmailRefused or
        EmailDeferred, after recording the failed attempt (``failed`` when permanent or final).
        """
        return retry_on_disconnect(lambda: self._deliver(booking_id, kind, final_attempt))

    def _deliver(self, booking_id: int, kind: str, final_attempt: bool) -> str:
        booking: BookingDetails | None = None
        message_id: str | None = None
        sent = False
        with self.engine.connect() as connection:
            try:
                with connection.begin():
                    booking = load_booking(connection, booking_id)
                    if booking is None:
                        logger.warning("no %s sent: booking %s does not exist", kind, booking_id,
                                       extra={"booking_id": booking_id, "kind": kind})
                        raise BookingNotFound(f"booking {booking_id} does not exist")
                    if kind == ETICKET and booking.status != "paid":
                        logger.warning("no eticket sent: booking %s is %s, not paid", booking.code, booking.status,
                                       extra={"booking_id": booking_id, "code": booking.code, "kind": kind})
                        raise BookingNotPaid(f"booking {booking.code} is {booking.status}, not paid")
                    if kind == CANCELLATION and booking.status != "refunded":
                        logger.warning("no cancellation sent: booking %s is %s, not refunded", booking.code,
                                       booking.status, extra={"booking_id": booking_id, "code": booking.code,
                                                              "kind": kind})
                        raise BookingNotRefunded(f"booking {booking.code} is {booking.status}, not refunded")
                    if kind == INVOICE and booking.status != "pending":
                        # Paid, expired or cancelled before its invoice could go (a long queue, retries):
                        # "please pay by ..." would only confuse the customer now.
                        logger.info("invoice %s not sent: the booking is %s already", booking.code, booking.status,
                                    extra={"booking_id": booking_id, "code": booking.code, "kind": kind})
                        return OUTDATED
                    delivery = self._claim(connection, booking, kind)
                    message_id = delivery.message_id
                    if delivery.status == SENT:
                        logger.info("%s %s already sent; duplicate job skipped", kind, booking.code,
                                    extra=_fields(booking, kind, message_id))
                        return DUPLICATE
                    self._send(booking, kind, message_id)
                    sent = True
                    connection.execute(
                        update(EmailDelivery)
                        .where(EmailDelivery.booking_id == booking.id, EmailDelivery.kind == kind)
                        .values(status=SENT, sent_at=func.statement_timestamp(), attempts=EmailDelivery.attempts + 1)
                    )
            except Exception as exc:
                # Database errors before the send touched nothing; after it, they are the window above.
                # (message_id is set only once the booking is loaded: the booking check narrows its type.)
                if booking is not None and message_id is not None and not sent and not isinstance(exc, DBAPIError):
                    self._record_failure(connection, booking, kind, message_id, exc, final_attempt)
                raise
        logger.info("%s %s sent", kind, booking.code, extra=_fields(booking, kind, message_id))
        return SENT

    def resend(self, resend_id: int, *, final_attempt: bool) -> str:
        """Send the email of one ``email_resends`` row unless it was sent already: ``"sent"`` or ``"duplicate"``.

        The same protocol as :meth:`deliver`, on the resend's own row: locked while sending, marked ``sent``
        in the transaction that holds the lock, so a redelivered or duplicated message sends nothing more.
        ``"outdated"`` (nothing sent, the row ``failed``) when the resend no longer exists or its booking has
        moved on since it was asked for (the e-ticket of a booking no longer paid, ...).
        """
        return retry_on_disconnect(lambda: self._resend(resend_id, final_attempt))

    def _resend(self, resend_id: int, final_attempt: bool) -> str:
        booking: BookingDetails | None = None
        kind, message_id, sent = "", "", False
        with self.engine.connect() as connection:
            try:
                with connection.begin():
                    row = connection.execute(
                        select(EmailResend.booking_id, EmailResend.kind, EmailResend.status)
                        .where(EmailResend.id == resend_id).with_for_update()
                    ).one_or_none()
                    if row is None:
                        logger.warning("resend %s does not exist: nothing sent", resend_id,
                                       extra={"resend_id": resend_id})
                        return OUTDATED
                    kind = row.kind
                    if row.status == SENT:
                        logger.info("resend %s already sent; duplicate job skipped", resend_id,
                                    extra={"resend_id": resend_id, "booking_id": row.booking_id, "kind": kind})
                        return DUPLICATE
                    booking = load_booking(connection, row.booking_id)
                    if booking is None or booking.status != _STATUS_FOR_KIND[kind]:
                        reason = ("its booking no longer exists" if booking is None
                                  else f"the booking is {booking.status}")
                        logger.warning("resend %s of %s not sent: %s", resend_id, kind, reason,
                                       extra={"resend_id": resend_id, "booking_id": row.booking_id, "kind": kind})
                        connection.execute(update(EmailResend).where(EmailResend.id == resend_id)
                                           .values(status="failed", last_error=f"not sent: {reason}"))
                        return OUTDATED
                    message_id = resend_message_id(kind, booking.code, resend_id, self.sender)
                    self._send(booking, kind, message_id)
                    sent = True
                    connection.execute(
                        update(EmailResend).where(EmailResend.id == resend_id)
                        .values(status=SENT, sent_at=func.statement_timestamp(), message_id=message_id,
                                attempts=EmailResend.attempts + 1)
                    )
            except Exception as exc:
                if booking is not None and message_id and not sent and not isinstance(exc, DBAPIError):
                    self._record_resend_failure(connection, resend_id, booking, kind, message_id, exc, final_attempt)
                raise
        logger.info("%s %s sent again (resend %s)", kind, booking.code, resend_id,
                    extra={**_fields(booking, kind, message_id), "resend_id": resend_id})
        return SENT

    def _record_resend_failure(self, connection: Connection, resend_id: int, booking: BookingDetails, kind: str,
                               message_id: str, error: Exception, final_attempt: bool) -> None:
        gives_up = final_attempt or not EMAIL.is_transient(error)
        last_error = f"{type(error).__name__}: {error}"[:ERROR_LENGTH]
        try:
            with connection.begin():
                connection.execute(
                    update(EmailResend).where(EmailResend.id == resend_id, EmailResend.status != SENT)
                    .values(status="failed" if gives_up else "pending", attempts=EmailResend.attempts + 1,
                            last_error=last_error, message_id=message_id)
                )
        except DBAPIError as exc:
            logger.warning("could not record the failed attempt of resend %s: %s", resend_id, exc.orig)
        logger.warning(
            "resend %s of %s %s not sent%s: %s", resend_id, kind, booking.code, "" if gives_up else ", will retry",
            error, extra={**_fields(booking, kind, message_id), "resend_id": resend_id, "error": last_error,
                          "final": gives_up},
        )

    def _claim(self, connection: Connection, booking: BookingDetails, kind: str) -> Any:
        """The delivery row, created when missing and locked until the transaction ends."""
        connection.execute(
            insert(EmailDelivery)
            .values(booking_id=booking.id, kind=kind, message_id=message_id_for(kind, booking.code, self.sender))
            .on_conflict_do_nothing()
        )
        return connection.execute(
            select(EmailDelivery.status, EmailDelivery.message_id)
            .where(EmailDelivery.booking_id == booking.id, EmailDelivery.kind == kind)
            .with_for_update()
        ).one()

    def _send(self, booking: BookingDetails, kind: str, message_id: str) -> None:
        message = render(kind, booking, self.sender, message_id=message_id)
        if self.limiter is not None:
            self.limiter.acquire()
        started = time.perf_counter()
        self.transport.send(message, name=f"{kind}-{booking.code}")
        SMTP_SEND_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def _record_failure(self, connection: Connection, booking: BookingDetails, kind: str, message_id: str,
                        error: Exception, final_attempt: bool) -> None:
        """Count the attempt and keep its error, in a transaction of its own (the claim's was rolled back).

        An upsert: the row may have been created by the very transaction that was rolled back.
        """
        gives_up = final_attempt or not EMAIL.is_transient(error)
        status = "failed" if gives_up else "pending"
        last_error = f"{type(error).__name__}: {error}"[:ERROR_LENGTH]
        claim = insert(EmailDelivery).values(
            booking_id=booking.id, kind=kind, message_id=message_id, status=status, attempts=1, last_error=last_error
        )
        try:
            with connection.begin():
                connection.execute(
                    claim.on_conflict_do_update(
                        index_elements=[EmailDelivery.booking_id, EmailDelivery.kind],
                        set_={"status": status, "attempts": EmailDelivery.attempts + 1, "last_error": last_error},
                        # A duplicate may have sent it since the lock was released: that stays true.
                        where=EmailDelivery.status != SENT,
                    )
                )
        except DBAPIError as exc:
            logger.warning("could not record the failed attempt of %s %s: %s", kind, booking.code, exc.orig)
        logger.warning(
            "%s %s not sent%s: %s", kind, booking.code, "" if gives_up else ", will retry", error,
            extra={**_fields(booking, kind, message_id), "error": last_error, "final": gives_up},
        )


def _fields(booking: BookingDetails, kind: str, message_id: str) -> dict[str, Any]:
    return {"booking_id": booking.id, "code": booking.code, "kind": kind, "message_id": message_id}
