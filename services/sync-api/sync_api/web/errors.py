"""Errors as ``{"error": "<message>"}`` with a fitting status, for every JSON route, mapped in one place.

antrian's own errors carry their status and extra fields (:class:`antrian.errors.AntrianError`);
werkzeug's (no such route, wrong method, a body too large or not JSON) and a lost database or broker
are the only others. A statement that ran into PostgreSQL's ``lock_timeout`` or ``statement_timeout``
answers like :class:`antrian.errors.Busy`: 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq.errors import BrokerConnectionError
from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from antrian.db.engine import is_timeout
from antrian.errors import AntrianError, Busy

logger = logging.getLogger(__name__)


def error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    """A JSON error answer; for the few answers that are no error of the domain (401, 403)."""
    return jsonify({"error": message, **extra}), status


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json" or (
        request.path.startswith("/admin/") and request.path.count("/") > 2
    )


def init_app(app: Flask) -> None:
    @app.errorhandler(AntrianError)
    def domain_error(exc: AntrianError) -> tuple[Response, int]:
        if isinstance(exc, Busy):  # a lock or statement timeout: the client is told to try again, nothing broke
            logger.warning("%s", exc)
        elif exc.status >= 500:
            logger.error("%s", exc)
        response, status = error(exc.status, str(exc), **exc.details())
        response.headers.update(exc.headers())
        return response, status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not _wants_json():
            return exc
        response, status = error(exc.code or 500, _message(exc))
        for name, value in exc.get_headers():  # e.g. a 405's Allow, which RFC 9110 requires
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(OperationalError)
    def database_down(exc: OperationalError) -> tuple[Response, int]:
        if is_timeout(exc):  # PostgreSQL's lock_timeout or statement_timeout, on any route: busy, not down
            logger.warning("statement gave up: %s", str(exc.orig).strip())
            return domain_error(Busy("the database is busy; try again shortly"))
        logger.error("database unavailable: %s", exc.orig)
        return error(503, "the database is unavailable; try again shortly")

    @app.errorhandler(BrokerConnectionError)
    def broker_down(exc: BrokerConnectionError) -> tuple[Response, int]:
        logger.error("broker unavailable: %s", exc)
        return error(503, "the message broker is unavailable; try again shortly")


def _message(exc: HTTPException) -> str:
    if exc.code == 400 and "JSON" in (exc.description or ""):
        return "malformed JSON body"
    return {400: "malformed request", 404: "not found", 405: "method not allowed"}.get(exc.code or 0, exc.name.lower())
