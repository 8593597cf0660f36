"""The WSGI application for gunicorn: ``sync_api.wsgi:app``."""

from sync_api import create_app

app = create_app()
