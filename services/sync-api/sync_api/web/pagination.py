"""``?limit=`` (default 100, at most 1000) and ``?offset=`` for every list route."""

from __future__ import annotations

import re

from flask import request

from antrian.errors import InvalidInput

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
#: The largest offset PostgreSQL takes (bigint).
MAX_OFFSET = 2**63 - 1


def page() -> tuple[int, int]:
    return _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT), _int_arg("offset", 0, 0, MAX_OFFSET)


def _int_arg(name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,30}", raw.strip()):
        raise InvalidInput(f"{name} must be a whole number")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidInput(f"{name} must be {bound}")
    return value
