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
from mailer.errors import EmailDeferred, PermanentFailure
from mailer.transport import make_transport

#: The longest an email waits for an ``SMTP_RATE_LIMIT`` token: half its time limit, so that the send itself
#: (``SMTP_TIMEOUT_S``) still fits. Past it the job is retried (RateLimitUnavailable).
SMTP_MAX_WAIT_S = EMAIL.time_limit_ms / 1000 / 2


def _deliveries(settings: Settings) -> Deliveries:
    # Not autocommit: a delivery holds its row lock in a transaction while the email is sent (which is why
    # DB_IDLE_IN_TRANSACTION_TIMEOUT_MS must exceed EMAIL's time limit).
    engine = engine_for(settings, pool_size=settings.db_pool_size_for("mailer"))
    sender = Sender(settings.mail_from_address, settings.mail_from_name)
    limiter = RateLimiter("smtp", settings.smtp_rate_limit, settings=settings, max_wait_s=SMTP_MAX_WAIT_S)
    return Deliveries(engine=engine, transport=make_transport(settings), sender=sender, limiter=limiter)


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
