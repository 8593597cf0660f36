"""Per-process database engine and broker, created on first use (never before gunicorn forks)."""

from __future__ import annotations

import threading

import dramatiq
from flask import Flask, current_app
from sqlalchemy import Engine

from antrian.db.engine import make_engine
from antrian.runtime.broker import make_broker

_lock = threading.Lock()


def init_app(app: Flask) -> None:
    app.extensions["antrian"] = {}


def _get(name: str, factory):
    state = current_app.extensions["antrian"]
    if name not in state:
        with _lock:
            if name not in state:
                state[name] = factory(current_app.config["ANTRIAN"])
    return state[name]


#: One connection per gunicorn thread (sync_api.gunicorn_conf.threads) plus the outbox relay's two: a smaller
#: pool opens and closes a connection for each request over it, which costs more than the request.
DEFAULT_POOL_SIZE = 10


def get_engine() -> Engine:
    def factory(settings) -> Engine:
        return make_engine(settings.database_url, pool_size=settings.db_pool_size or DEFAULT_POOL_SIZE)

    return _get("engine", factory)


def get_broker() -> dramatiq.Broker:
    return _get("broker", make_broker)
