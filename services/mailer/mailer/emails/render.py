"""The invoice and the e-ticket as ``EmailMessage``: a plain-text part and its HTML alternative.

Rendering takes plain data (:class:`~mailer.emails.bookings.BookingDetails`), never a database.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import cast

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from mailer.emails.bookings import BookingDetails
from mailer.emails.filters import AGENCY_TIMEZONE, FILTERS
from mailer.emails.qr import qr_png
from mailer.transport import RawEmail

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
    # Compiled once per process: the templates are part of the package and never change under a running mailer.
    auto_reload=False,
)
_templates.filters.update(FILTERS)
_compiled: dict[str, Template] = {}


def _template(name: str) -> Template:
    template = _compiled.get(name)
    if template is None:
        template = _compiled[name] = _templates.get_template(name)
    return template


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
    message.set_content(_template(f"{kind}.txt").render(context))
    message.add_alternative(_template(f"{kind}.html").render(context), subtype="html")
    if kind == ETICKET:
        # multipart/alternative(text/plain, multipart/related(text/html, image/png)).
        # The payload of a multipart EmailMessage is the list of its parts, each an EmailMessage too.
        html = cast("list[EmailMessage]", message.get_payload())[1]
        html.add_related(
            qr.png, maintype="image", subtype="png", cid=f"<{qr_cid}>", disposition="inline",
            filename=f"eticket-{booking.code}.png",
        )
    return message


def render_raw(kind: str, booking: BookingDetails, sender: Sender, *, message_id: str | None = None,
               now: datetime | None = None) -> RawEmail | EmailMessage:
    """:func:`render`'s email as ready-made MIME bytes, built directly from the templates' output: the same parts,
    headers and content, without the email package's per-header parsing (about ten times cheaper).

    An address that is not ASCII (which needs SMTPUTF8), a line break in a header value or a display name too long
    for one line takes :func:`render`'s path instead, which deals with (or refuses) them as before.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown email kind {kind!r}")
    subject = _SUBJECTS[kind].format(code=booking.code, tour=booking.tour_name)
    message_id = message_id or message_id_for(kind, booking.code, sender)
    headers = (subject, sender.name, booking.customer_name, message_id)
    if not (sender.address.isascii() and booking.customer_email.isascii()) or any(
            "\r" in value or "\n" in value for value in (*headers, sender.address, booking.customer_email)):
        return render(kind, booking, sender, message_id=message_id, now=now)
    context: dict[str, object] = {"booking": booking, "subject": subject, "sender_name": sender.name}
    qr = None
    if kind == ETICKET:
        qr = qr_png(booking.code)
        qr_cid = f"qr.{booking.code}@{sender.domain}"
        context.update(qr_cid=qr_cid, qr_size=qr.size)
    text = _template(f"{kind}.txt").render(context)
    html = _template(f"{kind}.html").render(context)

    outer = _boundary()
    lines = [
        _header("Subject", subject),
        "From: " + formataddr((sender.name, sender.address)),
        "To: " + formataddr((booking.customer_name, booking.customer_email)),
        "Date: " + format_datetime((now or datetime.now(AGENCY_TIMEZONE)).astimezone(AGENCY_TIMEZONE)),
        "Message-ID: " + message_id,
        # RFC 3834: sent by a program, so vacation responders stay quiet.
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{outer}"',
        "",
    ]
    if len(lines[1]) > _LINE or len(lines[2]) > _LINE:
        # A name long enough to need folding (rare): the email package folds address headers properly.
        return render(kind, booking, sender, message_id=message_id, now=now)
    body = [("\r\n".join(lines) + "\r\n").encode("ascii"), f"--{outer}\r\n".encode(), _text_part("plain", text)]
    if qr is None:
        body += [f"--{outer}\r\n".encode(), _text_part("html", html)]
    else:
        inner = _boundary()
        body += [
            f'--{outer}\r\nContent-Type: multipart/related; boundary="{inner}"\r\n\r\n--{inner}\r\n'.encode(),
            _text_part("html", html),
            (f"--{inner}\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
             f'Content-Disposition: inline; filename="eticket-{booking.code}.png"\r\n'
             f"Content-ID: <{qr_cid}>\r\n\r\n").encode("ascii"),
            _base64_lines(qr.png),
            f"--{inner}--\r\n".encode(),
        ]
    body.append(f"--{outer}--\r\n".encode())
    return RawEmail(sender.address, (booking.customer_email,), b"".join(body))


def _boundary() -> str:
    # "=_" can appear in neither quoted-printable (where "=" starts an escape) nor base64.
    return f"=_{secrets.token_hex(12)}"


#: RFC 5322's recommended longest line.
_LINE = 78
#: UTF-8 bytes per encoded word: its base64 (52 characters) and ``=?utf-8?b?...?=`` fit a 78-character line after
#: ``Subject: `` (RFC 2047 allows 75 characters per encoded word).
_WORD_BYTES = 39


def _header(name: str, value: str) -> str:
    """``Name: value``, folded, as RFC 2047 base64 encoded words (one per line, never a character split between
    two) when it is not ASCII."""
    if value.isascii():
        if len(name) + len(value) < 76:
            return f"{name}: {value}"
        return f"{name}: " + Header(value, "us-ascii", header_name=name).encode(linesep="\r\n")
    return f"{name}: " + _encoded_words(value)


def _encoded_words(value: str) -> str:
    words: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for character in value:
        encoded = character.encode("utf-8")
        if size + len(encoded) > _WORD_BYTES:
            words.append(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded)
    words.append(b"".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word).decode('ascii')}?=" for word in words)


def _text_part(subtype: str, content: str) -> bytes:
    """A text part, UTF-8 in quoted-printable (readable where it is ASCII, every line within SMTP's limits),
    ending with its last line break (the CRLF after it belongs to the next boundary)."""
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    if not content.endswith("\n"):
        content += "\n"
    encoded = binascii.b2a_qp(content.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode("ascii") + encoded + b"\r\n"


def _base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")
