"""Reading a JSON body: each field checked, each problem a 400 that names the field."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import request

from antrian.errors import InvalidInput

#: The HTML standard's valid email address (ASCII; a domain with a dot): nothing a mail header could read
#: as a second recipient (``,``), a display name (``<``) or a line break. International domains go as punycode.
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
#: C0 and C1 controls and Unicode's line and paragraph separators: none belongs in a name or a header.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Dates a tour can sensibly start on (and that every clock in the chain can hold).
FIRST_YEAR, LAST_YEAR = 2000, 2999


def json_object() -> dict[str, Any]:
    """The request body as a JSON object; malformed JSON or another JSON type is a 400."""
    try:
        body = json.loads(request.get_data())
    except (ValueError, RecursionError):
        raise InvalidInput("malformed JSON body") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def _present(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise InvalidInput(f"{name} is required")
    return value


def whole_number(body: dict[str, Any], name: str, *, low: int, high: int) -> int:
    value = _present(body, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}")
    return value


def text_field(body: dict[str, Any], name: str, *, max_length: int) -> str:
    value = _present(body, name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string")
    value = value.strip()
    if len(value) > max_length:
        raise InvalidInput(f"{name} must be at most {max_length} characters")
    if CONTROL_CHARACTERS.search(value):
        raise InvalidInput(f"{name} must not contain control characters")
    return value


def email_field(body: dict[str, Any], name: str) -> str:
    value = text_field(body, name, max_length=254)
    if not EMAIL.fullmatch(value):
        raise InvalidInput(f"{name} must be an email address")
    return value


def amount_field(body: dict[str, Any], name: str, *, high: Decimal) -> Decimal:
    """Rupiah as a JSON number or a numeric string, at least 0, at most two decimals."""
    value = _present(body, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f"{name} must be an amount")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} must be an amount") from None
    exponent = result.as_tuple().exponent  # 'n', 'N' or 'F' (not an int) only when not finite
    if not result.is_finite() or not isinstance(exponent, int) or result < 0 or result >= high or exponent < -2:
        raise InvalidInput(f"{name} must be an amount from 0 below {high:,.0f}, with at most two decimals")
    return result


def aware_datetime(body: dict[str, Any], name: str) -> datetime:
    value = _present(body, name)
    try:
        result = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        result = None
    if result is None:
        raise InvalidInput(f"{name} must be an ISO 8601 date and time")
    if result.tzinfo is None:
        raise InvalidInput(f"{name} must include a time zone, e.g. 2026-12-12T08:00:00+07:00")
    if not FIRST_YEAR < result.year < LAST_YEAR:
        raise InvalidInput(f"{name} must be between the years {FIRST_YEAR} and {LAST_YEAR}")
    return result
