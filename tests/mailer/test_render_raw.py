"""The mailer's fast path: ``render_raw`` builds MIME bytes straight from the templates; parsed back, they are the
email ``render`` builds with the email package (headers, parts, contents, the inline QR image)."""

from __future__ import annotations

import email
from dataclasses import replace
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage

import pytest

from mailer.emails.render import KINDS, Sender, render, render_raw
from mailer.transport import RawEmail
from tests.mailer.test_render import BOOKING, SENDER

pytestmark = pytest.mark.fast

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
BOOKINGS = [
    BOOKING,
    replace(BOOKING, customer_name='Sari "Ayu" <Wijaya>, Jr.',
            tour_name="Bromo Sunrise & Ijen Crater Blue Fire \N{EM DASH} a tour name long enough to be folded"),
    replace(BOOKING, customer_name="\N{LATIN CAPITAL LETTER N WITH TILDE}and\N{LATIN SMALL LETTER U WITH ACUTE}"
                                   " \u5c71\u7530"),
    replace(BOOKING, customer_name='Ni "Luh" \u5c71\u7530'),
]


def _leaves(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if not part.is_multipart()]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("booking", BOOKINGS, ids=["plain", "specials", "unicode", "quoted-unicode"])
@pytest.mark.parametrize("sender", [SENDER, Sender("tickets@tripin.example", "Tripin \N{EM DASH} Travel")],
                         ids=["ascii-sender", "unicode-sender"])
def test_raw_bytes_parse_back_to_the_email_render_builds(kind, booking, sender):
    built = render(kind, booking, sender, now=NOW)
    raw = render_raw(kind, booking, sender, now=NOW)
    assert isinstance(raw, RawEmail)
    assert raw.envelope_from == sender.address and raw.recipients == (booking.customer_email,)
    parsed = email.message_from_bytes(raw.data, policy=policy.default)
    for header in ("Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted"):
        assert str(parsed[header]) == str(built[header]), header
    assert [p.get_content_type() for p in parsed.walk()] == [p.get_content_type() for p in built.walk()]
    for ours, theirs in zip(_leaves(parsed), _leaves(built), strict=True):
        content, expected = ours.get_content(), theirs.get_content()
        if isinstance(content, str):
            content, expected = content.replace("\r\n", "\n"), expected.replace("\r\n", "\n")
        assert content == expected
        for header in ("Content-ID", "Content-Disposition"):
            assert str(ours.get(header)) == str(theirs.get(header)), header
    # Ready for DATA: CRLF line ends only, no line longer than RFC 5322's 78 characters
    lines = raw.data.split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    assert max(len(line) for line in lines) <= 78


@pytest.mark.parametrize("booking", [
    replace(BOOKING, customer_email="s\N{LATIN SMALL LETTER I WITH ACUTE}ti@example.com"),
    replace(BOOKING, customer_name="Siti\r\nBcc: x@example.com"),
    replace(BOOKING, customer_name="\u5c71\u7530 " * 30),
], ids=["smtputf8-address", "line-break-in-name", "name-to-fold"])
def test_what_the_fast_path_cannot_build_takes_the_email_package_path_and_fares_as_render_does(booking):
    try:
        expected: object = render("invoice", booking, SENDER, now=NOW)
    except Exception as exc:  # noqa: BLE001 - whatever render raises, render_raw raises too
        with pytest.raises(type(exc)):
            render_raw("invoice", booking, SENDER, now=NOW)
    else:
        raw = render_raw("invoice", booking, SENDER, now=NOW)
        assert isinstance(raw, EmailMessage) and isinstance(expected, EmailMessage)
        assert [(k, str(v)) for k, v in raw.items()] == [(k, str(v)) for k, v in expected.items()]
