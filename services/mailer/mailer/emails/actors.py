"""The Dramatiq actors of queue ``emails``: a booking's invoice and its e-ticket, each sent once.

Retries follow :data:`mailer.emails.retries.EMAIL`.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from antrian.config import Settings
from antrian.db.engine import engine_for
from antrian.messages import (
    EMAILS_QUEUE,
    RESEND_BOOKING_EMAIL,
    SEND_CANCELLATION_EMAIL,
    SEND_ETICKET_EMAIL,
    SEND_INVOICE_EMAIL,
)
from antrian.rate_limit import RateLimiter
from antrian.runtime.per_process import PerProcess
from mailer.emails.deliveries import Deliveries
from mailer.emails.metrics import EMAILS
from mailer.emails.render import CANCELLATION, ETICKET, INVOICE, Sender
from mailer.emails.retries import EMAIL
from mailer.errors import ClaimBusy, EmailDeferred, PermanentFailure
from mailer.transport import make_transport

#: The longest an email waits for an ``SMTP_RATE_LIMIT`` token: half its time limit, so that the send itself
#: (``SMTP_TIMEOUT_S``) still fits. Past it the job is retried (RateLimitUnavailable).
SMTP_MAX_WAIT_S = EMAIL.time_limit_ms / 1000 / 2


#: The longest a job that found its email claimed by another attempt (ClaimBusy) waits in the delay queue before it
#: looks again: 1 s, then twice as long each time (``claim_waits`` in its options), up to this, and never past the
#: moment that claim lapses. It costs no attempt.
CLAIM_RECHECK_MAX_S = 30.0
#: The first such wait: a live attempt has usually ended by then.
CLAIM_RECHECK_MIN_S = 1.0


def _deliveries(settings: Settings) -> Deliveries:
    # Autocommit: each step of the delivery protocol is one statement committed on its own; no transaction is
    # open while an email is sent (a claim with a lease stands in for the row lock the mailer used to hold).
    engine = engine_for(settings, pool_size=settings.db_pool_size_for("mailer"), autocommit=True)
    sender = Sender(settings.mail_from_address, settings.mail_from_name)
    limiter = RateLimiter("smtp", settings.smtp_rate_limit, settings=settings, max_wait_s=SMTP_MAX_WAIT_S)
    lease_s = EMAIL.time_limit_ms / 1000 + settings.smtp_timeout_s
    return Deliveries(engine=engine, transport=make_transport(settings), sender=sender, limiter=limiter,
                      lease_s=lease_s)


#: This process's engine, transport and deliveries; the worker's boot calls ``configure(settings)``.
deliveries = PerProcess(_deliveries)
configure = deliveries.configure


def close_transport() -> None:
    """Release what the calling worker thread holds on the transport (its SMTP connection)."""
    if deliveries.made is not None:
        deliveries.made.transport.close()


_OPTIONS = {"queue_name": EMAILS_QUEUE, **EMAIL.actor_options()}


@dramatiq.actor(actor_name=SEND_INVOICE_EMAIL.actor, **_OPTIONS)
def send_invoice_email(booking_id: int) -> None:
    """Send the booking's invoice, with its payment deadline, once."""
    _deliver(booking_id, INVOICE)


@dramatiq.actor(actor_name=SEND_ETICKET_EMAIL.actor, **_OPTIONS)
def send_eticket_email(booking_id: int) -> None:
    """Send the paid booking's e-ticket, with a QR code of its code, once."""
    _deliver(booking_id, ETICKET)


@dramatiq.actor(actor_name=SEND_CANCELLATION_EMAIL.actor, **_OPTIONS)
def send_cancellation_email(booking_id: int) -> None:
    """Tell the customer of a refunded booking that it is cancelled and its ticket void, once."""
    _deliver(booking_id, CANCELLATION)


@dramatiq.actor(actor_name=RESEND_BOOKING_EMAIL.actor, **_OPTIONS)
def resend_booking_email(resend_id: int) -> None:
    """Send one resend's email (an operator asked for the booking's email once more), once."""
    _deliver(resend_id, RESEND)


#: The metrics' kind label of resends.
RESEND = "resend"


def _deliver(booking_id: int, kind: str) -> None:
    """``kind`` RESEND: ``booking_id`` is the id of an ``email_resends`` row."""
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0) if message is not None else 0
    final_attempt = EMAIL.is_final(message)
    try:
        if kind == RESEND:
            result = deliveries.get().resend(booking_id, final_attempt=final_attempt)
        else:
            result = deliveries.get().deliver(booking_id, kind, final_attempt=final_attempt)
    except ClaimBusy as exc:
        # Another attempt is sending it: hand this very message (its retries unchanged) back to the delay queue, as
        # Dramatiq's own retry does, and ack it only once that is done. It looks again when it comes back.
        EMAILS.labels(kind, "busy").inc()
        if message is None:
            raise dramatiq.Retry(str(exc), delay=int(CLAIM_RECHECK_MIN_S * 1000)) from exc
        waits = message.options.get("claim_waits", 0)
        message.options["claim_waits"] = waits + 1
        delay_s = min(CLAIM_RECHECK_MIN_S * 2 ** min(waits, 10), CLAIM_RECHECK_MAX_S,
                      max(exc.retry_in_s, CLAIM_RECHECK_MIN_S))
        try:
            dramatiq.get_broker().enqueue(message, delay=int(delay_s * 1000))
        except Exception as failure:  # noqa: BLE001 - the broker's own retry then looks again (an attempt spent)
            raise dramatiq.Retry(f"{kind} for booking {booking_id}: {exc}", delay=int(delay_s * 1000)) from failure
        return
    except PermanentFailure:
        # Logged where it was found; ``throws`` makes Dramatiq dead-letter it without a traceback.
        EMAILS.labels(kind, "failed").inc()
        raise
    except EmailDeferred as exc:
        if final_attempt:
            EMAILS.labels(kind, "failed").inc()
            raise
        EMAILS.labels(kind, "retry").inc()
        # Retry is Dramatiq's quiet way to ask for another attempt (no traceback in the log).
        raise dramatiq.Retry(f"{kind} for booking {booking_id}: {exc}") from exc
    except BaseException as exc:
        # Database lost for longer than retry_on_disconnect waits, the time limit, or a bug.
        EMAILS.labels(kind, "retry" if EMAIL.should_retry(retries, exc) else "failed").inc()
        raise
    EMAILS.labels(kind, result).inc()
