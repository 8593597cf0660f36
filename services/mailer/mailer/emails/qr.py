"""QR codes as PNG: mail clients block SVG and data: URIs, but show a PNG attached inline."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import NamedTuple

import segno

#: Pixels per module and quiet-zone modules: sharp on phones, scannable from a printout.
SCALE, BORDER = 6, 4


class QrImage(NamedTuple):
    png: bytes
    #: Width and height in pixels (the image is square).
    size: int


#: QR images kept per process (a few MB at most): a pure function of the booking code, made once per code.
CACHE_SIZE = 1024


@lru_cache(maxsize=CACHE_SIZE)
def qr_png(text: str) -> QrImage:
    """A regular QR code (never a Micro QR, which many scanners cannot read) of ``text``; cached per ``text``."""
    code = segno.make_qr(text, error="m")
    buffer = io.BytesIO()
    code.save(buffer, kind="png", scale=SCALE, border=BORDER)
    width, _ = code.symbol_size(scale=SCALE, border=BORDER)  # an int for an int scale (segno's stub says int | float)
    return QrImage(buffer.getvalue(), int(width))
