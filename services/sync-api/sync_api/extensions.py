"""Per-process database engine and broker, created on first use (never before gunicorn forks)."""

from __future__ import annotations

import threading

import dramatiq
from flask import Flask, current_app
from sqlalchemy import Engine

from antrian.broker import make_broker
from antrian.db import make_engine

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
    return _get("engine", lambda settings: make_engine(settings.database_url, pool_size=settings.db_pool_size or 5))


def get_broker() -> dramatiq.Broker:
    return _get("broker", make_broker)
