"""QR codes as PNG: mail clients block SVG and data: URIs, but show a PNG attached inline."""

from __future__ import annotations

import io
from typing import NamedTuple

import segno

#: Pixels per module and quiet-zone modules: sharp on phones, scannable from a printout.
SCALE, BORDER = 6, 4


class QrImage(NamedTuple):
    png: bytes
    #: Width and height in pixels (the image is square).
    size: int


def qr_png(text: str) -> QrImage:
    """A regular QR code (never a Micro QR, which many scanners cannot read) of ``text``."""
    code = segno.make_qr(text, error="m")
    buffer = io.BytesIO()
    code.save(buffer, kind="png", scale=SCALE, border=BORDER)
    width, _ = code.symbol_size(scale=SCALE, border=BORDER)  # an int for an int scale (segno's stub says int | float)
    return QrImage(buffer.getvalue(), int(width))
