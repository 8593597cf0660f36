"""The invoice and the e-ticket as ``EmailMessage``: a plain-text part and its HTML alternative.

Rendering takes plain data (:class:`~mailer.emails.bookings.BookingDetails`), never a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import cast

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from mailer.emails.bookings import BookingDetails
from mailer.emails.filters import AGENCY_TIMEZONE, FILTERS
from mailer.emails.qr import qr_png

INVOICE, ETICKET, CANCELLATION = "invoice", "eticket", "cancellation"
KINDS = (INVOICE, ETICKET, CANCELLATION)

_SUBJECTS = {INVOICE: "Invoice {code} \N{EM DASH} {tour}", ETICKET: "Your e-ticket {code} \N{EM DASH} {tour}",
             CANCELLATION: "Booking {code} cancelled \N{EM DASH} {tour}"}

_templates = Environment(
    loader=PackageLoader("mailer.emails", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(FILTERS)


@dataclass(frozen=True)
class Sender:
    """Who the emails are from (``MAIL_FROM_ADDRESS``, ``MAIL_FROM_NAME``)."""

    address: str
    name: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] or "localhost"


def message_id_for(kind: str, code: str, sender: Sender) -> str:
    """The ``Message-ID`` of a booking's email of this kind: the same on every attempt, so a resend can be dropped."""
    return f"<{kind}.{code}@{sender.domain}>"


def resend_message_id(kind: str, code: str, resend_id: int, sender: Sender) -> str:
    """The ``Message-ID`` of one resend: its own (mail systems drop a second message with a known one), stable
    across its attempts."""
    return f"<{kind}.{code}.resend-{resend_id}@{sender.domain}>"


def render(kind: str, booking: BookingDetails, sender: Sender, *, message_id: str | None = None,
           now: datetime | None = None) -> EmailMessage:
    """The booking's email of ``kind`` (``invoice``, ``eticket`` or ``cancellation``), ready to send.

    ``message_id`` defaults to :func:`message_id_for`; deliveries pass the one they recorded.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown email kind {kind!r}")
    subject = _SUBJECTS[kind].format(code=booking.code, tour=booking.tour_name)
    context = {"booking": booking, "subject": subject, "sender_name": sender.name}

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = formataddr((sender.name, sender.address))
    message["To"] = formataddr((booking.customer_name, booking.customer_email))
    message["Date"] = format_datetime((now or datetime.now(AGENCY_TIMEZONE)).astimezone(AGENCY_TIMEZONE))
    message["Message-ID"] = message_id or message_id_for(kind, booking.code, sender)
    # RFC 3834: sent by a program, so vacation responders stay quiet.
    message["Auto-Submitted"] = "auto-generated"

    if kind == ETICKET:
        qr = qr_png(booking.code)
        qr_cid = f"qr.{booking.code}@{sender.domain}"
        context.update(qr_cid=qr_cid, qr_size=qr.size)
    message.set_content(_templates.get_template(f"{kind}.txt").render(context))
    message.add_alternative(_templates.get_template(f"{kind}.html").render(context), subtype="html")
    if kind == ETICKET:
        # multipart/alternative(text/plain, multipart/related(text/html, image/png)).
        # The payload of a multipart EmailMessage is the list of its parts, each an EmailMessage too.
        html = cast("list[EmailMessage]", message.get_payload())[1]
        html.add_related(
            qr.png, maintype="image", subtype="png", cid=f"<{qr_cid}>", disposition="inline",
            filename=f"eticket-{booking.code}.png",
        )
    return message
