"""The application in process (Flask's test client), pointed at a database and a broker that do not exist, so
any route that reached either would answer 503 instead of the answer a fast test checks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from antrian.config import load_settings
from sync_api import create_app
from tests.support import free_port

TOKEN = "fast-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOWHERE = replace(
    load_settings({}), api_token=TOKEN, payment_server_key="key", payment_simulator=True,
    database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere",
    broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
)


@pytest.fixture(scope="module")
def app():
    return create_app(NOWHERE)


@pytest.fixture
def client(app):
    return app.test_client()
