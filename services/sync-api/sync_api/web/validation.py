"""Request fields as pydantic types, and a request's first problem as one clear 400 that names the field.

Each type below validates a field the way the API always has (a whole number is never a string or a
bool, text is trimmed and free of control characters, an amount has at most two decimals) and describes
itself to the OpenAPI document (:mod:`sync_api.web.openapi`) with the same bounds, so the document and the
checks cannot drift apart. :func:`clear_message` turns pydantic's first error into the sentence the API
answers with, e.g. ``quantity must be between 1 and 1000``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from flask import request
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema
from werkzeug.exceptions import BadRequest

from antrian.errors import InvalidInput

#: The HTML standard's valid email address (ASCII; a domain with a dot): nothing a mail header could read
#: as a second recipient (``,``), a display name (``<``) or a line break. International domains go as punycode.
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
#: C0 and C1 controls and Unicode's line and paragraph separators: none belongs in a name or a header.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The same rule for the document: no control character, and at least one character that is not a space.
_ALLOWED = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
_TEXT_PATTERN = rf"^{_ALLOWED}*[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]{_ALLOWED}*$"
#: Dates a tour can sensibly start on (and that every clock in the chain can hold).
FIRST_YEAR, LAST_YEAR = 2000, 2999
#: The largest id PostgreSQL's bigint holds.
MAX_ID = 2**63 - 1


def _invalid(phrase: str) -> PydanticCustomError:
    """A field's problem, said after its name: ``<field> <phrase>``."""
    return PydanticCustomError("antrian", phrase)


class _FieldType:
    """A pydantic annotation (``Annotated[int, WholeNumber(1, 10)]``) that checks a value and documents itself."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return self.json_schema()


@dataclass(frozen=True)
class WholeNumber(_FieldType):
    """A JSON integer (``7`` or ``7.0``) from ``low`` to ``high``, never a string or a bool; ``in_query``: digits."""

    low: int
    high: int
    in_query: bool = False

    def check(self, value: Any) -> int:
        if self.in_query and isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,30}", value.strip()):
            value = int(value)
        elif isinstance(value, float) and value.is_integer():  # JSON Schema's integer: 7.0 is 7
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid("must be a whole number")
        if not self.low <= value <= self.high:
            raise _invalid(f"must be between {self.low} and {self.high}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Text(_FieldType):
    """A non-empty string, trimmed, at most ``max_length`` characters, without control characters."""

    max_length: int

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _invalid("must be a non-empty string")
        value = value.strip()
        if len(value) > self.max_length:
            raise _invalid(f"must be at most {self.max_length} characters")
        if CONTROL_CHARACTERS.search(value):
            raise _invalid("must not contain control characters")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length, "pattern": _TEXT_PATTERN}


@dataclass(frozen=True)
class Email(Text):
    """An email address a mail header cannot misread (see :data:`EMAIL`)."""

    max_length: int = 254

    def check(self, value: Any) -> str:
        value = super().check(value)
        if not EMAIL.fullmatch(value):
            raise _invalid("must be an email address")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "email", "maxLength": self.max_length}


@dataclass(frozen=True)
class Amount(_FieldType):
    """Rupiah as a JSON number or a numeric string, at least 0, below ``high``, at most two decimals."""

    high: Decimal

    @property
    def rule(self) -> str:
        return f"an amount from 0 below {self.high:,.0f}, with at most two decimals"

    def check(self, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _invalid("must be an amount")
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise _invalid("must be an amount") from None
        exponent = result.as_tuple().exponent  # 'n', 'N' or 'F' (not an int) only when not finite
        if not result.is_finite() or not isinstance(exponent, int) or not 0 <= result < self.high or exponent < -2:
            raise _invalid(f"must be {self.rule}")
        return result

    def json_schema(self) -> dict[str, Any]:
        digits = len(str(int(self.high))) - 1
        return {
            "description": f"rupiah: {self.rule}",
            "oneOf": [
                {"type": "number", "minimum": 0, "exclusiveMaximum": int(self.high), "multipleOf": 0.01},
                {"type": "string", "pattern": r"^[0-9]{1,%d}(\.[0-9]{1,2})?$" % digits},
            ],
        }


@dataclass(frozen=True)
class Moment(_FieldType):
    """An ISO 8601 date and time with its time zone, within :data:`FIRST_YEAR` and :data:`LAST_YEAR`."""

    def check(self, value: Any) -> datetime:
        try:
            result = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            result = None
        if result is None:
            raise _invalid("must be an ISO 8601 date and time")
        if result.tzinfo is None:
            raise _invalid("must include a time zone, e.g. 2026-12-12T08:00:00+07:00")
        if not FIRST_YEAR <= result.year <= LAST_YEAR:
            raise _invalid(f"must be between the years {FIRST_YEAR} and {LAST_YEAR}")
        return result

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time", "pattern": "^2[0-9]{3}-"}


#: A database id in a body: a whole number from 1 to bigint's largest.
Id = Annotated[int, WholeNumber(1, MAX_ID)]
EmailAddress = Annotated[str, Email()]
AwareDateTime = Annotated[datetime, Moment()]


def clear_message(error: ValidationError) -> str:
    """The first problem of a request's body or query, as ``<field> <what is wrong>``."""
    problems = error.errors(include_url=False, include_input=False)
    problem = problems[0]
    field = ".".join(str(part) for part in problem["loc"]) or "the body"
    kind = problem["type"]
    if kind == "antrian":
        return f"{field} {problem['msg']}"
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        unknown = sorted(".".join(map(str, p["loc"])) for p in problems if p["type"] == "extra_forbidden")
        return f"unknown field(s): {', '.join(unknown)}"
    if kind == "literal_error":
        expected = problem.get("ctx", {}).get("expected", "")
        return f"{field} must be one of {expected.replace(' or ', ', ').replace(chr(39), '')}"
    return f"{field}: {problem['msg'][:1].lower()}{problem['msg'][1:]}"


def json_object() -> dict[str, Any]:
    """The request body as a JSON object (parsed once, kept for the model); otherwise a 400."""
    try:
        body = request.get_json(force=True, silent=False)
    except (BadRequest, RecursionError):  # malformed, or nested deeper than the parser goes
        raise InvalidInput("malformed JSON body") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body
