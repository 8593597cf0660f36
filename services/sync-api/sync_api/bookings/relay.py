"""The outbox relay, run as a background thread in every sync-api worker process.

sync-api writes the outbox rows, so it relays them: as many relays as web processes, kept apart by
``SKIP LOCKED``, each woken by the commit that wrote a row. No extra deployable to forget.
"""

from __future__ import annotations

import threading

from flask import Flask

from antrian.bookings.outbox import OutboxRelay
from sync_api.bookings.metrics import OUTBOX_PUBLISHED
from sync_api.web.extensions import get_broker, get_engine


def start(app: Flask) -> threading.Event:
    """Start relaying in a daemon thread; set the returned event to stop it."""
    with app.app_context():
        relay = OutboxRelay(get_engine(), get_broker(), app.config["ANTRIAN"].broker_url)
    relay.on_published(lambda queue, count: OUTBOX_PUBLISHED.labels(queue).inc(count))
    stop = threading.Event()
    threading.Thread(target=relay.run, args=(stop,), name="outbox-relay", daemon=True).start()
    return stop
