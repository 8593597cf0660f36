"""QR codes as PNG: mail clients block SVG and data: URIs, but show a PNG attached inline."""

from __future__ import annotations

import io

import segno

#: Pixels per module and quiet-zone modules: sharp on phones, scannable from a printout.
SCALE, BORDER = 6, 4


def qr_png(text: str) -> bytes:
    """A regular QR code (never a Micro QR, which many scanners cannot read) of ``text``."""
    buffer = io.BytesIO()
    segno.make_qr(text, error="m").save(buffer, kind="png", scale=SCALE, border=BORDER)
    return buffer.getvalue()
