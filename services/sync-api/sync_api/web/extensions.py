"""Per-process database engine and broker, created on first use (never before gunicorn forks)."""

from __future__ import annotations

import threading

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask import Flask, current_app
from sqlalchemy import Engine

from antrian.db.engine import make_engine, timeouts
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


def get_engine() -> Engine:
    def factory(settings) -> Engine:
        return make_engine(settings.database_url, pool_size=settings.db_pool_size_for("sync-api"),
                           **timeouts(settings))

    return _get("engine", factory)


def get_broker() -> RabbitmqBroker:
    return _get("broker", make_broker)
