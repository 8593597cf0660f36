"""The Dramatiq actor of queue ``booking-expiry``: one attempt (the next tick is the retry), 300 s at most."""

from __future__ import annotations

import dramatiq
from sqlalchemy import Engine

from antrian.config import Settings
from antrian.db.engine import make_engine, timeouts
from antrian.messages import BOOKING_EXPIRY_QUEUE, EXPIRE_UNPAID_BOOKINGS
from antrian.runtime.per_process import PerProcess
from booking_expiry.bookings import sweep
from booking_expiry.bookings.retries import SWEEP


def _engine(settings: Settings) -> Engine:
    return make_engine(
        settings.database_url, pool_size=settings.db_pool_size_for("booking-expiry"), **timeouts(settings)
    )


#: This process's engine; the worker's boot calls ``configure(settings)``.
engine = PerProcess(_engine)
configure = engine.configure


@dramatiq.actor(actor_name=EXPIRE_UNPAID_BOOKINGS.actor, queue_name=BOOKING_EXPIRY_QUEUE, **SWEEP.actor_options())
def expire_unpaid_bookings() -> None:
    """Expire every pending booking past its deadline and give its seats back (skips if a sweep is running)."""
    sweep.sweep(engine.get())
