"""Jinja filters for amounts in rupiah and times in the agency's timezone, the way Indonesian customers read them."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

#: The travel agency's timezone; its times are shown as WIB (Waktu Indonesia Barat).
AGENCY_TIMEZONE = ZoneInfo("Asia/Jakarta")

# English names, fixed here so that the process's locale cannot change them.
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


#: Values each filter remembers: an invoice shows its deadline three times, and a tour's start and price repeat across
#: its bookings' emails (a plain per-process cache of pure functions, so nothing shared goes stale).
_CACHED = 4096


@lru_cache(maxsize=_CACHED)
def rupiah(amount: Decimal | int | float) -> str:
    """``Rp 1.500.000``: dots between thousands; ``,50`` style cents only when there are some."""
    value = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 1)
    text = f"{int(whole):,}".replace(",", ".")
    if fraction:
        text += f",{int(fraction * 100):02d}"
    return f"{sign}Rp {text}"


@lru_cache(maxsize=_CACHED)
def wib(moment: datetime) -> str:
    """``Saturday 12 December 2026, 08:00 WIB``: an aware datetime in the agency's timezone."""
    local = moment.astimezone(AGENCY_TIMEZONE)
    return f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year}, {local:%H:%M} WIB"


FILTERS = {"rupiah": rupiah, "wib": wib}
