"""Exactly one email per booking and kind, ever: its delivery row is claimed while sending, marked sent before the ack.

No database transaction is open while the SMTP server is talked to. The protocol, each step one statement committed
on its own (the engine is in autocommit mode):

1. load the booking (and decide: not found, not paid, an outdated invoice: nothing to send), and, in the same
   statement when the booking is as its email needs,
2. **claim** the delivery row: ``INSERT`` it (booking, kind, Message-ID) with ``claim_id`` = a new UUID and
   ``claimed_until`` = now + :data:`CLAIM_LEASE_S`, or, when it exists, ``UPDATE`` it so ``ON CONFLICT DO UPDATE
   ... WHERE status <> 'sent' AND (no claim OR the claim lapsed OR the claim is this attempt's own)``. PostgreSQL
   takes the row's lock for that one statement, so two attempts can never both hold a live claim;
3. when nothing was claimed, read why: ``sent`` already (a duplicate: ``"duplicate"``, nothing sent) or claimed
   by another attempt that is sending it now (:class:`ClaimBusy`: this job waits a moment and looks again, then
   hands itself back to the queue with a delay, never acked as done before that other attempt sent or failed);
4. take the ``SMTP_RATE_LIMIT`` token, render and send, holding no transaction;
5. ``UPDATE`` it to ``sent`` (``attempts + 1``, the claim cleared) ``WHERE claim_id`` is this attempt's, and only
   then return, so Dramatiq acks after that commit. A lost database is waited for on this one statement
   (it is idempotent), not by sending again.

A failed send (or a failure between the claim and the send: no rate-limit token in time, the time limit) releases
the claim and records the attempt in one statement (``failed`` when permanent or final, else ``pending``).

A mailer that dies mid-send (SIGKILL, OOM, a lost host) leaves its claim: its message is redelivered at once, finds
the claim live and waits; the claim lapses after :data:`CLAIM_LEASE_S`, longer than any live attempt can last (the
actor's time limit plus one SMTP timeout for the reply it may be blocked on when the limit strikes), so a slow live
send is never doubled. The email then goes again with the same ``Message-ID``.

One window stays open, as it always has: the SMTP server accepted the email, then the process died (or lost the
database for longer than it waits) before step 5. The email goes again, with the same ``Message-ID`` (made from
the booking and kind only), by which mail systems recognise a resend. SMTP has no two-phase commit that could
close this window.

Resends (``email_resends``, one row per resend an operator asked for) follow the same protocol on their own row,
which exists already: the claim is an ``UPDATE ... WHERE status <> 'sent' AND (claim free, lapsed or own)``.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any, Callable, TypeVar

from sqlalchemy import Engine, and_, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError

from antrian.db.engine import retry_on_disconnect
from antrian.db.models import EmailDelivery, EmailResend
from antrian.rate_limit import RateLimiter
from mailer.emails.bookings import BookingDetails, load_booking
from mailer.emails.metrics import SMTP_SEND_SECONDS
from mailer.emails.render import CANCELLATION, ETICKET, INVOICE, Sender, message_id_for, render_raw, resend_message_id
from mailer.emails.retries import EMAIL
from mailer.errors import BookingNotFound, BookingNotPaid, BookingNotRefunded, ClaimBusy
from mailer.transport import SMTP_TIMEOUT_S, Transport

logger = logging.getLogger(__name__)
T = TypeVar("T")

SENT, DUPLICATE, OUTDATED = "sent", "duplicate", "outdated"
#: The status a booking must still have for a resend of its email of each kind (as :meth:`Deliveries.deliver`).
_STATUS_FOR_KIND = {INVOICE: "pending", ETICKET: "paid", CANCELLATION: "refunded"}
#: Characters of an error kept in ``email_deliveries.last_error``.
ERROR_LENGTH = 1000
#: Seconds a claim lasts when its attempt never ends it (the process died): longer than any live attempt, which is
#: cut off by the actor's time limit (the reply it may be blocked on when the limit strikes ends within one SMTP
#: timeout). Deliveries take the transport's real timeout (``lease_s``); this is the default settings' value.
CLAIM_LEASE_S = EMAIL.time_limit_ms / 1000 + SMTP_TIMEOUT_S
#: How long a job that finds its email claimed by another attempt waits and looks again before handing itself
#: back to the queue: a live attempt sends within milliseconds, a dead one's claim lasts until its lease ends.
CLAIM_WAIT_S = 2.0


class Deliveries:
    """Sends each booking's emails once.

    Parameters:
      engine: the database, in autocommit mode: each step of the protocol above commits on its own.
      transport: where the emails go.
      sender: the From address, whose domain also ends every Message-ID.
      limiter: gives a token right before each send (``SMTP_RATE_LIMIT``); a throttled email waits for it inside
        its job (holding its claim, whose lease covers that wait), which costs no attempt.
      lease_s: how long a claim lasts (:data:`CLAIM_LEASE_S`).
    """

    def __init__(self, *, engine: Engine, transport: Transport, sender: Sender,
                 limiter: RateLimiter | None = None, lease_s: float = CLAIM_LEASE_S) -> None:
        self.engine = engine
        self.transport = transport
        self.sender = sender
        self.limiter = limiter
        self.lease = timedelta(seconds=lease_s)

    # ------------------------------------------------------------------ deliveries

    def deliver(self, booking_id: int, kind: str, *, final_attempt: bool) -> str:
        """Send the booking's email of ``kind`` unless it was sent already: ``"sent"`` or ``"duplicate"``.

        ``"outdated"`` when it is an invoice for a booking no longer pending (nothing is sent).

        Raises BookingNotFound, BookingNotPaid (e-tickets), the transport's EmailRefused or
        EmailDeferred, after recording the failed attempt (``failed`` when permanent or final);
        ClaimBusy when another attempt is sending it now (nothing recorded).
        """
        claim = uuid.uuid4()
        prefix, suffix = message_id_for(kind, _CODE, self.sender).split(_CODE)
        first = {"booking_id": booking_id, "kind": kind, "claim": claim, "lease": self.lease, "prefix": prefix,
                 "suffix": suffix, "wanted": _STATUS_FOR_KIND[kind]}
        # Steps 1 and 2 in one statement: the booking, and the claim when the booking is as its email needs.
        loaded = self._run(lambda connection: connection.execute(_LOAD_AND_CLAIM, first).one_or_none())
        booking = None if loaded is None else BookingDetails(**dict(zip(_DETAILS, loaded, strict=False)))
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
                           booking.status, extra={"booking_id": booking_id, "code": booking.code, "kind": kind})
            raise BookingNotRefunded(f"booking {booking.code} is {booking.status}, not refunded")
        if kind == INVOICE and booking.status != "pending":
            # Paid, expired or cancelled before its invoice could go (a long queue, retries):
            # "please pay by ..." would only confuse the customer now.
            logger.info("invoice %s not sent: the booking is %s already", booking.code, booking.status,
                        extra={"booking_id": booking_id, "code": booking.code, "kind": kind})
            return OUTDATED

        message_id = loaded.claimed if loaded is not None else None
        if message_id is None:  # sent already, or being sent: step 3
            message_id = self._claim_delivery(booking, kind, claim)
        if message_id is None:
            logger.info("%s %s already sent; duplicate job skipped", kind, booking.code,
                        extra=_fields(booking, kind, message_for(kind, booking, self.sender)))
            return DUPLICATE
        try:
            self._send(booking, kind, message_id)
        except BaseException as exc:
            this = and_(EmailDelivery.booking_id == booking.id, EmailDelivery.kind == kind,
                        EmailDelivery.claim_id == claim)
            self._release(EmailDelivery, this, booking, kind, message_id, exc, final_attempt)
            raise
        row = {"booking_id": booking.id, "kind": kind, "claim": claim}
        marked = self._run(lambda connection: connection.execute(_DELIVERY_SENT, row).rowcount)
        if not marked:
            self._claim_lost(EmailDelivery, and_(EmailDelivery.booking_id == booking.id, EmailDelivery.kind == kind),
                             booking, kind, message_id)
        logger.info("%s %s sent", kind, booking.code, extra=_fields(booking, kind, message_id))
        return SENT

    def _claim_delivery(self, booking: BookingDetails, kind: str, claim: uuid.UUID) -> str | None:
        """Claim the delivery row (created when missing): its Message-ID, None when it was sent already.

        Raises ClaimBusy when another attempt holds a live claim for longer than :data:`CLAIM_WAIT_S`.
        """
        row = {"booking_id": booking.id, "kind": kind, "claim": claim, "lease": self.lease,
               "message_id": message_id_for(kind, booking.code, self.sender)}
        return self._claim(lambda connection: connection.execute(_CLAIM_DELIVERY, row).one_or_none(),
                           lambda connection: connection.execute(_DELIVERY_STATE, row).one_or_none(),
                           f"{kind} {booking.code}")

    # ------------------------------------------------------------------ resends

    def resend(self, resend_id: int, *, final_attempt: bool) -> str:
        """Send the email of one ``email_resends`` row unless it was sent already: ``"sent"`` or ``"duplicate"``.

        The same protocol as :meth:`deliver`, on the resend's own row: claimed while sending, marked ``sent``
        by the attempt that holds the claim, so a redelivered or duplicated message sends nothing more.
        ``"outdated"`` (nothing sent, the row ``failed``) when the resend no longer exists or its booking has
        moved on since it was asked for (the e-ticket of a booking no longer paid, ...).
        """
        claim = uuid.uuid4()
        now = func.statement_timestamp()
        statement = (
            update(EmailResend)
            .where(EmailResend.id == resend_id, EmailResend.status != SENT, _claimable(EmailResend, claim))
            .values(claim_id=claim, claimed_until=now + self.lease)
            .returning(EmailResend.booking_id, EmailResend.kind)
        )
        state = select(EmailResend.status, EmailResend.claimed_until - now).where(EmailResend.id == resend_id)
        claimed = self._claim(lambda connection: connection.execute(statement).one_or_none(),
                              lambda connection: connection.execute(state).one_or_none(), f"resend {resend_id}",
                              whole_row=True)
        if claimed is _MISSING:
            logger.warning("resend %s does not exist: nothing sent", resend_id, extra={"resend_id": resend_id})
            return OUTDATED
        if claimed is None:
            logger.info("resend %s already sent; duplicate job skipped", resend_id, extra={"resend_id": resend_id})
            return DUPLICATE
        kind = claimed.kind
        this = and_(EmailResend.id == resend_id, EmailResend.claim_id == claim)
        try:
            booking = self._run(lambda connection: load_booking(connection, claimed.booking_id))
        except BaseException:
            self._run(lambda connection: connection.execute(
                update(EmailResend).where(this).values(claim_id=None, claimed_until=None)))
            raise
        if booking is None or booking.status != _STATUS_FOR_KIND[kind]:
            reason = "its booking no longer exists" if booking is None else f"the booking is {booking.status}"
            logger.warning("resend %s of %s not sent: %s", resend_id, kind, reason,
                           extra={"resend_id": resend_id, "booking_id": claimed.booking_id, "kind": kind})
            self._run(lambda connection: connection.execute(
                update(EmailResend).where(this)
                .values(status="failed", last_error=f"not sent: {reason}", claim_id=None, claimed_until=None)))
            return OUTDATED
        message_id = resend_message_id(kind, booking.code, resend_id, self.sender)
        try:
            self._send(booking, kind, message_id)
        except BaseException as exc:
            self._release(EmailResend, this, booking, kind, message_id, exc, final_attempt, resend_id=resend_id)
            raise
        marked = self._run(lambda connection: connection.execute(
            update(EmailResend).where(this)
            .values(status=SENT, sent_at=func.statement_timestamp(), message_id=message_id,
                    attempts=EmailResend.attempts + 1, claim_id=None, claimed_until=None)
        ).rowcount)
        if not marked:
            self._claim_lost(EmailResend, EmailResend.id == resend_id, booking, kind, message_id,
                             values={"message_id": message_id})
        logger.info("%s %s sent again (resend %s)", kind, booking.code, resend_id,
                    extra={**_fields(booking, kind, message_id), "resend_id": resend_id})
        return SENT

    # ------------------------------------------------------------------ the steps

    def _run(self, step: Callable[[Any], T]) -> T:
        """One statement (or read) on a connection of its own, committed at once; waits out a lost database."""
        def once() -> T:
            with self.engine.connect() as connection:
                return step(connection)
        return retry_on_disconnect(once)

    def _claim(self, claim: Callable[[Any], Any], state: Callable[[Any], Any], what: str, *,
               whole_row: bool = False) -> Any:
        """Run the ``claim`` statement: its first column (its row with ``whole_row``) when it claimed the row; when
        it claimed nothing, look at ``state`` (status, time left): None when sent, ``_MISSING`` when there is no row;
        a live claim of another attempt is looked at again until :data:`CLAIM_WAIT_S`, then ClaimBusy."""
        deadline = time.monotonic() + CLAIM_WAIT_S
        pause = 0.02
        while True:
            def attempt(connection: Any) -> tuple[str, Any, Any]:
                row = claim(connection)
                if row is not None:
                    return "claimed", (row if whole_row else row[0]), None
                found = state(connection)
                return ("missing", None, None) if found is None else ("taken", found[0], found[1])
            outcome, status, left = self._run(attempt)
            if outcome == "claimed":
                return status
            if outcome == "missing":
                return _MISSING
            if status == SENT:
                return None
            if left is None:  # released between the two statements: claim again at once
                continue
            left_s = max(left.total_seconds(), 0.0)
            if time.monotonic() + pause > deadline:
                logger.info("%s is being sent by another attempt (its claim ends in %.0fs): looking again later",
                            what, left_s, extra={"claim_left_s": round(left_s, 1)})
                raise ClaimBusy(f"{what} is being sent by another attempt", retry_in_s=left_s)
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _send(self, booking: BookingDetails, kind: str, message_id: str) -> None:
        if self.limiter is not None:
            self.limiter.acquire()
        message = render_raw(kind, booking, self.sender, message_id=message_id)
        started = time.perf_counter()
        self.transport.send(message, name=f"{kind}-{booking.code}")
        SMTP_SEND_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def _release(self, table: Any, this: Any, booking: BookingDetails, kind: str, message_id: str,
                 error: BaseException, final_attempt: bool, *, resend_id: int | None = None) -> None:
        """Release the claim after a failed attempt and count it, in one statement (``failed`` when permanent or
        final, else ``pending``). An interruption (the time limit, a stopping worker) releases it too: whether
        the server took the email is unknown, and the next attempt sends it with the same Message-ID."""
        gives_up = isinstance(error, Exception) and (final_attempt or not EMAIL.is_transient(error))
        last_error = f"{type(error).__name__}: {error}"[:ERROR_LENGTH]
        values: dict[str, Any] = {"status": "failed" if gives_up else "pending", "attempts": table.attempts + 1,
                                  "last_error": last_error, "claim_id": None, "claimed_until": None}
        if resend_id is not None:
            values["message_id"] = message_id
        try:
            self._run(lambda connection: connection.execute(update(table).where(this).values(**values)))
        except DBAPIError as exc:
            # The claim then lapses after its lease.
            logger.warning("could not record the failed attempt of %s %s: %s", kind, booking.code, exc.orig)
        extra = {**_fields(booking, kind, message_id), "error": last_error, "final": gives_up}
        if resend_id is not None:
            extra["resend_id"] = resend_id
            logger.warning("resend %s of %s %s not sent%s: %s", resend_id, kind, booking.code,
                           "" if gives_up else ", will retry", error, extra=extra)
        else:
            logger.warning("%s %s not sent%s: %s", kind, booking.code, "" if gives_up else ", will retry", error,
                           extra=extra)

    def _claim_lost(self, table: Any, row: Any, booking: BookingDetails, kind: str, message_id: str, *,
                    values: dict[str, Any] | None = None) -> None:
        """The email went, but this attempt's claim had lapsed (it ran past its lease, which should not happen):
        mark it sent unless another attempt holds a live claim (which then marks it itself)."""
        logger.error("%s %s sent after its claim lapsed: another attempt may send it too", kind, booking.code,
                     extra=_fields(booking, kind, message_id))
        now = func.statement_timestamp()
        self._run(lambda connection: connection.execute(
            update(table).where(row, table.status != SENT, or_(table.claimed_until.is_(None),
                                                               table.claimed_until < now))
            .values(status=SENT, sent_at=now, attempts=table.attempts + 1, claim_id=None, claimed_until=None,
                    **(values or {}))))


# The hot path's statements, written once (an email costs two: the booking with the claim, the mark).
_DETAILS = ("id", "code", "status", "customer_name", "customer_email", "quantity", "total_amount", "expires_at",
            "tour_name", "tour_starts_at")
#: Stands for the booking code in :func:`message_id_for`'s result, split around it for SQL to put the code back.
_CODE = "\x00"
#: The booking (as :func:`mailer.emails.bookings.load_booking` reads it) and, when its status is the one its email
#: needs (``wanted``), the claim of its delivery row as ``_CLAIM_DELIVERY`` makes it: ``claimed`` is the row's
#: Message-ID when claimed, NULL when not (sent, being sent, or the booking is not as its email needs).
_LOAD_AND_CLAIM = text(
    """WITH booking AS (
           SELECT b.id, b.code, b.status, b.customer_name, b.customer_email, b.quantity, b.total_amount,
                  b.expires_at, t.name AS tour_name, t.starts_at AS tour_starts_at
           FROM bookings b JOIN tours t ON t.id = b.tour_id
           WHERE b.id = :booking_id),
       claimed AS (
           INSERT INTO email_deliveries AS d (booking_id, kind, message_id, claim_id, claimed_until)
           SELECT id, :kind, :prefix || code || :suffix, :claim, statement_timestamp() + :lease
           FROM booking WHERE status = :wanted
           ON CONFLICT (booking_id, kind) DO UPDATE
               SET claim_id = excluded.claim_id, claimed_until = excluded.claimed_until
               WHERE d.status <> 'sent'
                 AND (d.claim_id IS NULL OR d.claimed_until < statement_timestamp() OR d.claim_id = excluded.claim_id)
           RETURNING d.message_id)
       SELECT booking.*, (SELECT message_id FROM claimed) AS claimed FROM booking"""
)
_CLAIM_DELIVERY = text(
    """INSERT INTO email_deliveries AS d (booking_id, kind, message_id, claim_id, claimed_until)
       VALUES (:booking_id, :kind, :message_id, :claim, statement_timestamp() + :lease)
       ON CONFLICT (booking_id, kind) DO UPDATE
           SET claim_id = excluded.claim_id, claimed_until = excluded.claimed_until
           WHERE d.status <> 'sent'
             AND (d.claim_id IS NULL OR d.claimed_until < statement_timestamp() OR d.claim_id = excluded.claim_id)
       RETURNING d.message_id"""
)
_DELIVERY_STATE = text(
    """SELECT status, claimed_until - statement_timestamp() FROM email_deliveries
       WHERE booking_id = :booking_id AND kind = :kind"""
)
_DELIVERY_SENT = text(
    """UPDATE email_deliveries
       SET status = 'sent', sent_at = statement_timestamp(), attempts = attempts + 1, claim_id = NULL,
           claimed_until = NULL
       WHERE booking_id = :booking_id AND kind = :kind AND claim_id = :claim"""
)


class _Missing:
    pass


_MISSING: Any = _Missing()


def _claimable(table: Any, claim: uuid.UUID) -> Any:
    """No live claim on the row, or this attempt's own (a claim whose commit's reply was lost, run again)."""
    return or_(table.claim_id.is_(None), table.claimed_until < func.statement_timestamp(), table.claim_id == claim)


def message_for(kind: str, booking: BookingDetails, sender: Sender) -> str:
    return message_id_for(kind, booking.code, sender)


def _fields(booking: BookingDetails, kind: str, message_id: str) -> dict[str, Any]:
    return {"booking_id": booking.id, "code": booking.code, "kind": kind, "message_id": message_id}
