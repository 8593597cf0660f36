"""sync-api: the internal HTTP API and admin pages of antrian; :func:`create_app` is its application factory."""

from __future__ import annotations

from flask import Flask

from antrian.config import Settings
from antrian.logging import configure_logging
from antrian.runtime.startup import settings_or_exit

#: The largest request body any route accepts (413 above it).
MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: one blueprint per concern, settings from the environment unless given."""
    if settings is None:
        settings = settings_or_exit("sync-api", require=("api_token",), database=False, broker=False)
    configure_logging("sync-api", settings.log_level)
    app = Flask(__name__)
    app.config.update(
        ANTRIAN=settings,
        # The admin session is a random id in a cookie, kept in PostgreSQL (sync_api.web.sessions): Flask's own
        # signed session is not used, and needs no key.
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        JSON_SORT_KEYS=False,
        # No route takes more than a few kilobytes; a bigger body is refused before it is read.
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )

    from sync_api import admin
    from sync_api.access import api as access_api
    from sync_api.bookings import api as bookings_api
    from sync_api.bookings import payments_api
    from sync_api.jobs import api as jobs_api
    from sync_api.sync import api as sync_runs_api
    from sync_api.web import errors, extensions, headers, health, http_metrics, openapi

    extensions.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    http_metrics.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(sync_runs_api.bp)
    app.register_blueprint(bookings_api.bp)
    app.register_blueprint(payments_api.bp)
    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(access_api.bp)
    app.register_blueprint(admin.bp)
    openapi.init_app(app)
    return app
