"""Per-process database engine and broker, created on first use (never before gunicorn forks)."""

from __future__ import annotations

import threading

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask import Flask, current_app
from sqlalchemy import Engine

from antrian.db.engine import engine_for
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
        return engine_for(settings, pool_size=settings.db_pool_size_for("sync-api"))

    return _get("engine", factory)


def get_broker() -> RabbitmqBroker:
    return _get("broker", make_broker)
