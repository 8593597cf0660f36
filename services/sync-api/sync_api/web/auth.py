"""The bearer token for ``/api/`` and, for ``/admin/``, the same token kept in a signed HttpOnly session."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request, session

from sync_api.web.errors import error


def token_is_valid(candidate: str | None) -> bool:
    expected = current_app.config["ANTRIAN"].api_token
    if not candidate:
        return False
    return hmac.compare_digest(candidate.encode(), expected.encode())


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def is_authenticated() -> bool:
    """A valid bearer header, or an admin session opened with the token."""
    return token_is_valid(bearer_token()) or session.get("admin") is True


#: Header the admin page's scripts send; a cross-site form cannot set it (defence beside SameSite=Strict).
SCRIPT_HEADER = "X-Requested-With"


def require_token():
    """``before_request`` hook for blueprints whose every route needs the token."""
    if token_is_valid(bearer_token()):
        return None
    if session.get("admin") is not True:
        return error(401, "missing or wrong API token")
    if request.method not in ("GET", "HEAD") and not request.headers.get(SCRIPT_HEADER):
        return error(403, f"a session-authenticated {request.method} needs the {SCRIPT_HEADER} header")
    return None


def login_required_json(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        return require_token() or view(*args, **kwargs)

    return wrapper
