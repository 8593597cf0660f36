"""Who is asking, and may they: a bearer token (``API_TOKEN``, the bootstrap admin, or an operator's own) or an
admin session cookie, checked against the role a route needs (GET: ``viewer``; anything else: ``operator``;
tokens: ``admin``). A wrong token is 401 (logged), a wrong role 403. The admin login form is throttled
(:mod:`sync_api.web.throttle`); a bearer token is not: it is 256 random bits, and API clients expect 401."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from antrian.access import tokens
from antrian.access.audit import Actor
from antrian.access.roles import allows
from antrian.access.tokens import Operator
from sync_api.web import sessions, throttle
from sync_api.web.errors import error
from sync_api.web.extensions import get_engine

logger = logging.getLogger(__name__)

#: Header the admin page's scripts send; a cross-site form cannot set it (defence beside SameSite=Strict).
SCRIPT_HEADER = "X-Requested-With"
#: Methods that change nothing: a ``viewer`` may use them.
READ_METHODS = ("GET", "HEAD", "OPTIONS")


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def check_token(candidate: str) -> Operator | None:
    """The operator a presented token belongs to: ``API_TOKEN``'s bootstrap admin or a live operator token."""
    settings = current_app.config["ANTRIAN"]
    return tokens.bootstrap(settings.api_token, candidate) or tokens.identify(get_engine(), candidate)


def current() -> Operator | None:
    """The operator of this request (bearer token first, then the session cookie), looked up once per request."""
    if "operator" not in g:
        g.operator, g.via = None, None
        candidate = bearer_token()
        if candidate:
            g.operator, g.via = check_token(candidate), "api"
        elif session_id := request.cookies.get(sessions.COOKIE):
            api_token = current_app.config["ANTRIAN"].api_token
            g.operator, g.via = sessions.find(get_engine(), session_id, api_token=api_token), "admin"
    return g.operator


def actor() -> Actor:
    """Who does this request's action, for the audit trail (only called once :func:`require` let it through)."""
    operator = current()
    assert operator is not None
    return Actor(operator.name, g.via)


def is_authenticated() -> bool:
    return current() is not None


def client_address() -> str:
    return request.remote_addr or "unknown"


def refused_sign_in(candidate: str | None) -> None:
    """Count a failed admin sign-in and log it (past the allowance, the next ones are refused unchecked)."""
    settings = current_app.config["ANTRIAN"]
    keys = throttle.keys(client_address(), candidate)
    failures = throttle.fail(get_engine(), keys, window_s=settings.antrian_login_window_s)
    logger.warning("failed admin sign-in from %s (%s in this window)", client_address(), failures,
                   extra={"event": "sign_in_failed", "address": client_address(), "failures": failures,
                          "token_prefix": (candidate or "")[:4]})


def require(needed: str) -> Any:
    """None when this request's operator has ``needed``'s rights; else its 401, 403 or 429 answer."""
    operator = current()
    if operator is None:
        if bearer_token():
            logger.warning("wrong bearer token from %s for %s %s", client_address(), request.method, request.path,
                           extra={"event": "bearer_token_refused", "address": client_address()})
        return error(401, "missing or wrong API token")
    if g.via == "admin" and request.method not in READ_METHODS and not request.headers.get(SCRIPT_HEADER):
        return error(403, f"a session-authenticated {request.method} needs the {SCRIPT_HEADER} header")
    if not allows(operator.role, needed):
        return error(403, f"this needs the {needed} role; {operator.name} has the {operator.role} role")
    return None


def require_by_method() -> Any:
    """``before_request`` hook: reading needs ``viewer``, anything else ``operator``."""
    return require("viewer" if request.method in READ_METHODS else "operator")


def requires(needed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view that needs ``needed`` (checked before the view and its input's validation)."""
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return require(needed) or view(*args, **kwargs)

        return wrapper

    return decorator
