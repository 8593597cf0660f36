"""The invoice and the e-ticket as built from plain booking data: amounts, times, parts, QR code, Message-ID."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from html import unescape

import PIL.Image
import pytest
import zxingcpp

from mailer.emails.bookings import BookingDetails
from mailer.emails.filters import rupiah, wib
from mailer.emails.render import ETICKET, INVOICE, Sender, message_id_for, render

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast

SENDER = Sender("noreply@tours.example", "Nusantara Tours")
BOOKING = BookingDetails(
    id=42,
    code="K7QM-2XH9",
    status="paid",
    customer_name="Siti Rahayu",
    customer_email="siti@example.com",
    quantity=3,
    total_amount=Decimal("1500000.00"),
    expires_at=datetime(2026, 12, 1, 3, 30, tzinfo=timezone.utc),
    tour_name="Bromo Sunrise & Madakaripura",
    tour_starts_at=datetime(2026, 12, 12, 1, 0, tzinfo=timezone.utc),
)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (1500000, "Rp 1.500.000"),
        (0, "Rp 0"),
        (1234.5, "Rp 1.234,50"),
        (Decimal("1500000.00"), "Rp 1.500.000"),
        (Decimal("999.99"), "Rp 999,99"),
        (Decimal("1000000.05"), "Rp 1.000.000,05"),
    ],
)
def test_rupiah(amount, text):
    assert rupiah(amount) == text


def test_times_are_shown_in_wib():
    assert wib(datetime(2026, 12, 12, 1, 0, tzinfo=timezone.utc)) == "Saturday 12 December 2026, 08:00 WIB"
    assert wib(datetime(2026, 12, 31, 20, 5, tzinfo=timezone.utc)) == "Friday 1 January 2027, 03:05 WIB"


def test_invoice_has_a_text_and_an_html_part_with_everything_the_customer_needs():
    message = render(INVOICE, BOOKING, SENDER)
    assert message["Subject"] == "Invoice K7QM-2XH9 \N{EM DASH} Bromo Sunrise & Madakaripura"
    assert message["From"] == "Nusantara Tours <noreply@tours.example>"
    assert message["To"] == "Siti Rahayu <siti@example.com>"
    assert message["Date"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Bromo Sunrise &amp; Madakaripura" in html  # escaped
    for body in (_words(text), _words(html)):
        assert "K7QM-2XH9" in body
        assert "Bromo Sunrise & Madakaripura" in body
        assert "Saturday 12 December 2026, 08:00 WIB" in body  # the tour
        assert re.search(r"\bSeats:? 3\b", body)
        assert "Rp 1.500.000" in body
        assert "Tuesday 1 December 2026, 10:30 WIB" in body  # the payment deadline


def test_eticket_shows_a_qr_code_of_the_booking_code_as_an_inline_png():
    message = render(ETICKET, BOOKING, SENDER)
    assert message["Subject"] == "Your e-ticket K7QM-2XH9 \N{EM DASH} Bromo Sunrise & Madakaripura"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    assert "K7QM-2XH9" in text and "Saturday 12 December 2026, 08:00 WIB" in text
    related = message.get_payload()[1]
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert image.get_content_type() == "image/png"
    assert image.get_content_disposition() == "inline"
    cid = image["Content-ID"].strip("<>")
    html = html_part.get_content()
    assert f'src="cid:{cid}"' in html
    assert "data:" not in html and "<svg" not in html
    for expected in ("K7QM-2XH9", "Bromo Sunrise &amp; Madakaripura", "Saturday 12 December 2026, 08:00 WIB"):
        assert expected in html

    png = PIL.Image.open(io.BytesIO(image.get_content()))
    results = zxingcpp.read_barcodes(png)
    assert [result.text for result in results] == ["K7QM-2XH9"]
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode


def _words(body: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace runs made one space."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_message_id_is_stable_per_booking_and_kind():
    first = render(INVOICE, BOOKING, SENDER, now=datetime(2026, 11, 1, tzinfo=timezone.utc))
    again = render(INVOICE, BOOKING, SENDER, now=datetime(2026, 11, 2, tzinfo=timezone.utc))
    eticket = render(ETICKET, BOOKING, SENDER)
    other_booking = render(INVOICE, replace(BOOKING, id=43, code="P3RT-8WQ2"), SENDER)
    assert first["Message-ID"] == again["Message-ID"] == message_id_for(INVOICE, "K7QM-2XH9", SENDER)
    assert first["Message-ID"] == "<invoice.K7QM-2XH9@tours.example>"
    assert eticket["Message-ID"] != first["Message-ID"]
    assert other_booking["Message-ID"] != first["Message-ID"]


def test_a_recorded_message_id_is_used_as_given():
    message = render(INVOICE, BOOKING, SENDER, message_id="<invoice.K7QM-2XH9@old.example>")
    assert message["Message-ID"] == "<invoice.K7QM-2XH9@old.example>"


def test_a_cancellation_says_the_booking_is_cancelled_and_refunded_with_no_ticket():
    message = render("cancellation", replace(BOOKING, status="refunded"), SENDER)
    assert message["Subject"] == "Booking K7QM-2XH9 cancelled \N{EM DASH} Bromo Sunrise & Madakaripura"
    assert message["Message-ID"] == message_id_for("cancellation", "K7QM-2XH9", SENDER)
    text = message.get_body(("plain",)).get_content()
    html = unescape(message.get_body(("html",)).get_content())
    for body in (text, html):
        assert "K7QM-2XH9" in body and "cancelled" in body and "refunded" in body.lower()
        assert "Rp 1.500.000" in body and "no longer valid" in body
    assert not [part for part in message.walk() if part.get_content_type() == "image/png"]
