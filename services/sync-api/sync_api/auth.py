"""The bearer token for ``/api/`` and, for ``/admin/``, the same token kept in a signed HttpOnly session."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request, session

from .errors import error


def token_is_valid(candidate: str | None) -> bool:
    expected = current_app.config["ANTRIAN"].api_token
    return bool(candidate) and hmac.compare_digest(candidate.encode(), expected.encode())


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def is_authenticated() -> bool:
    """A valid bearer header, or an admin session opened with the token."""
    return token_is_valid(bearer_token()) or session.get("admin") is True


def require_token():
    """``before_request`` hook for blueprints whose every route needs the token."""
    if not is_authenticated():
        return error(401, "missing or wrong API token")
    return None


def login_required_json(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        return require_token() or view(*args, **kwargs)

    return wrapper
