"""sync-api: the internal HTTP API and admin pages of antrian; :func:`create_app` is its application factory."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from flask import Flask

from antrian.config import Settings
from antrian.logging import configure_logging
from antrian.runtime.startup import settings_or_exit

#: The largest request body any route accepts (413 above it).
MAX_BODY_BYTES = 64 * 1024
#: PBKDF2 rounds for the session key: about 0.1 s once per process.
SESSION_KEY_ROUNDS = 200_000


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: one blueprint per concern, settings from the environment unless given."""
    if settings is None:
        settings = settings_or_exit("sync-api", require=("api_token",), database=False, broker=False)
    configure_logging("sync-api", settings.log_level)
    app = Flask(__name__)
    app.config.update(
        ANTRIAN=settings,
        # Admin sessions are signed with a key derived from the token (slowly, so a captured cookie
        # does not help guess the token); a new token logs everyone out.
        SECRET_KEY=hashlib.pbkdf2_hmac(
            "sha256", settings.require("api_token").encode(), b"antrian-admin-session", SESSION_KEY_ROUNDS
        ).hex(),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="antrian_admin",
        JSON_SORT_KEYS=False,
        # No route takes more than a few kilobytes; a bigger body is refused before it is read.
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )

    from sync_api import admin
    from sync_api.bookings import api as bookings_api
    from sync_api.bookings import payments_api
    from sync_api.jobs import api as jobs_api
    from sync_api.sync import api as sync_runs_api
    from sync_api.web import errors, extensions, health, http_metrics, openapi

    extensions.init_app(app)
    errors.init_app(app)
    http_metrics.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(sync_runs_api.bp)
    app.register_blueprint(bookings_api.bp)
    app.register_blueprint(payments_api.bp)
    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(admin.bp)
    openapi.init_app(app)
    return app
