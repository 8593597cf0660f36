"""The expiry sweep: every pending booking past its deadline becomes ``expired`` and its seats go back, once.

Set-based: each batch is one statement that picks due bookings ``FOR UPDATE SKIP LOCKED``, expires
them and adds their seats back per tour (``antrian.seats.expire_due_bookings``, the code path the
payment notifications use too), and commits. A sweep killed mid-batch leaves that batch undone,
never half-done; the next sweep picks it up.

Never two at once, on any number of hosts: a sweep holds a PostgreSQL advisory lock for its whole
run and a second one that cannot take it returns at once. The lock belongs to the sweep's database
session, so a sweep that dies releases it with its connection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from antrian.seats import expire_due_bookings

from .metrics import BOOKINGS_EXPIRED, LAST_SUCCESS, SEATS_RELEASED, SWEEP_SECONDS, SWEEPS_SKIPPED

logger = logging.getLogger(__name__)

#: The advisory lock's key: one number for "the expiry sweep", the same in every process.
SWEEP_LOCK = 0x616E7472_00000001
#: Bookings per batch (one statement, one transaction): large enough for speed, small enough to keep
#: each transaction's locks short while bookings and payments go on.
BATCH_SIZE = 5_000


@dataclass(frozen=True)
class SweepResult:
    ran: bool
    expired: int = 0
    seats: int = 0
    batches: int = 0
    seconds: float = 0.0


def sweep(engine: Engine, *, batch_size: int = BATCH_SIZE) -> SweepResult:
    """Expire every due booking in batches, unless another sweep is running (then return at once)."""
    started = time.perf_counter()
    with engine.connect() as connection:
        if not connection.execute(select(func.pg_try_advisory_lock(SWEEP_LOCK))).scalar_one():
            connection.rollback()
            SWEEPS_SKIPPED.inc()
            logger.info("expiry sweep skipped: another sweep is running", extra={"event": "sweep_skipped"})
            return SweepResult(ran=False)
        connection.commit()
        try:
            expired = seats = batches = 0
            while True:
                with connection.begin():
                    ended = expire_due_bookings(connection, batch_size)
                if not ended:
                    break
                batches += 1
                expired += len(ended)
                seats += sum(booking.quantity for booking in ended)
                BOOKINGS_EXPIRED.inc(len(ended))
                SEATS_RELEASED.inc(sum(booking.quantity for booking in ended))
                for booking in ended:
                    logger.info(
                        "booking %s expired, %d seats back to tour %d", booking.code, booking.quantity, booking.tour_id,
                        extra={"event": "booking_expired", "booking_id": booking.id, "code": booking.code,
                               "tour_id": booking.tour_id, "seats": booking.quantity},
                    )
                if len(ended) < batch_size:
                    break
        finally:
            connection.execute(select(func.pg_advisory_unlock(SWEEP_LOCK)))
            connection.commit()
    seconds = time.perf_counter() - started
    SWEEP_SECONDS.observe(seconds)
    LAST_SUCCESS.set(time.time())
    logger.info(
        "expiry sweep done: %d bookings expired, %d seats back, in %.3f s", expired, seats, seconds,
        extra={"event": "sweep_done", "expired": expired, "seats": seats, "batches": batches, "seconds": seconds},
    )
    return SweepResult(ran=True, expired=expired, seats=seats, batches=batches, seconds=seconds)
