"""Errors as ``{"error": "<message>"}`` with a fitting status, for every JSON route."""

from __future__ import annotations

import logging

from dramatiq.errors import BrokerConnectionError
from flask import Flask, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import BadRequest, HTTPException

from antrian.errors import DependencyUnavailable
from antrian.jobs.failed_jobs import RetryInterrupted

logger = logging.getLogger(__name__)


def error(status: int, message: str, **extra):
    return jsonify({"error": message, **extra}), status


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json" or (
        request.path.startswith("/admin/") and request.path.count("/") > 2
    )


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not _wants_json():
            return exc
        return error(exc.code or 500, _message(exc))

    @app.errorhandler(OperationalError)
    def database_down(exc: OperationalError):
        logger.error("database unavailable: %s", exc.orig)
        return error(503, "the database is unavailable; try again shortly")

    @app.errorhandler(DependencyUnavailable)
    def dependency_down(exc: DependencyUnavailable):
        logger.error("%s", exc)
        extra = {"retried": exc.retried} if isinstance(exc, RetryInterrupted) else {}
        return error(503, str(exc), **extra)

    @app.errorhandler(BrokerConnectionError)
    def broker_down(exc: BrokerConnectionError):
        logger.error("broker unavailable: %s", exc)
        return error(503, "the message broker is unavailable; try again shortly")


def _message(exc: HTTPException) -> str:
    if isinstance(exc, ClearBadRequest):
        return exc.description
    if exc.code == 400 and "JSON" in (exc.description or ""):
        return "malformed JSON body"
    return {400: "malformed request", 404: "not found", 405: "method not allowed"}.get(exc.code, exc.name.lower())


class ClearBadRequest(BadRequest):
    """A 400 whose description is already the message to show."""
