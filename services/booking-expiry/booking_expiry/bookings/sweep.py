"""The expiry sweep: every pending booking past its deadline becomes ``expired`` and its seats go back, once.

Set-based: each batch is one statement that picks due bookings ``FOR UPDATE SKIP LOCKED``, expires
them and adds their seats back per tour (``antrian.bookings.seats.expire_due_bookings``, the code path the
payment notifications use too), and commits. A sweep killed mid-batch leaves that batch undone,
never half-done; the next sweep picks it up.

The audit trail is one JSON log line per committed batch, ``"event": "bookings_expired"``, listing the
``ids`` and ``codes`` of every booking it expired and the seats per tour: the union of a sweep's lines
names every booking it expired, once. (One line per booking was a third to a half of the sweep's time.)

Never two at once, on any number of hosts: a sweep holds a PostgreSQL advisory lock for its whole
run and a second one that cannot take it returns at once. The lock belongs to the sweep's database
session, so a sweep that dies releases it with its connection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from antrian.bookings.seats import expire_due_bookings
from booking_expiry.bookings.metrics import (
    BOOKINGS_EXPIRED,
    LAST_SUCCESS,
    SEATS_RELEASED,
    SWEEP_SECONDS,
    SWEEPS_SKIPPED,
)

logger = logging.getLogger(__name__)

#: The advisory lock's key: one number for "the expiry sweep", the same in every process.
SWEEP_LOCK = 0x616E7472_00000001
#: Bookings per batch (one statement, one transaction): large enough for speed, small enough to keep
#: each transaction's locks short while bookings and payments go on.
BATCH_SIZE = 5_000


#: A batch waits at most this long for a row someone else holds (an open transaction on a tour, say),
#: and runs at most the second figure: a stuck batch rolls back and ends the sweep, instead of holding
#: thousands of booking locks (and the payments waiting on them) until the lock is freed.
LOCK_TIMEOUT, STATEMENT_TIMEOUT = "5s", "60s"
#: PostgreSQL's codes for those two timeouts.
TIMED_OUT = {"55P03", "57014"}


@dataclass(frozen=True)
class SweepResult:
    ran: bool
    expired: int = 0
    seats: int = 0
    batches: int = 0
    seconds: float = 0.0
    #: A batch gave up on a lock or ran too long: what it held is for the next sweep.
    interrupted: bool = False


def sweep(engine: Engine, *, batch_size: int = BATCH_SIZE) -> SweepResult:
    """Expire every due booking in batches, unless another sweep is running (then return at once)."""
    started = time.perf_counter()
    connection = engine.connect()
    try:
        if not connection.execute(select(func.pg_try_advisory_lock(SWEEP_LOCK))).scalar_one():
            connection.rollback()
            SWEEPS_SKIPPED.inc()
            logger.info("expiry sweep skipped: another sweep is running", extra={"event": "sweep_skipped"})
            return SweepResult(ran=False)
        connection.commit()
        expired, seats, batches, interrupted = _batches(connection, batch_size)
        connection.execute(select(func.pg_advisory_unlock(SWEEP_LOCK)))
        connection.commit()
    except BaseException:
        # The time limit, a lost database, a bug: whatever the state of the session, it must not go back
        # to the pool still holding the sweep's lock. Closing it for good releases the lock on the server.
        connection.invalidate()
        raise
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    SWEEP_SECONDS.observe(seconds)
    if not interrupted:
        LAST_SUCCESS.set(time.time())
    logger.info(
        "expiry sweep %s: %d bookings expired, %d seats back, in %.3f s",
        "interrupted" if interrupted else "done", expired, seats, seconds,
        extra={"event": "sweep_interrupted" if interrupted else "sweep_done", "expired": expired, "seats": seats,
               "batches": batches, "seconds": seconds},
    )
    return SweepResult(ran=True, expired=expired, seats=seats, batches=batches, seconds=seconds,
                       interrupted=interrupted)


def _batches(connection, batch_size: int) -> tuple[int, int, int, bool]:
    expired = seats = batches = 0
    while True:
        try:
            with connection.begin():
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
                ended = expire_due_bookings(connection, batch_size)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in TIMED_OUT:
                raise
            logger.warning("expiry sweep stopped: a batch timed out (%s); the next sweep takes it up",
                           str(exc.orig).strip(), extra={"event": "batch_timed_out"})
            return expired, seats, batches, True
        if not ended:
            return expired, seats, batches, False
        batches += 1
        expired += len(ended)
        seats += ended.seats
        BOOKINGS_EXPIRED.inc(len(ended))
        SEATS_RELEASED.inc(ended.seats)
        # The audit trail: one line per batch naming every booking it expired (ids and codes in id order,
        # the same order) and the seats each tour got back. Written once the batch has committed.
        logger.info(
            "expiry sweep batch %d: %d bookings expired, %d seats back to %d tours",
            batches, len(ended), ended.seats, len(ended.tours),
            extra={"event": "bookings_expired", "batch": batches, "count": len(ended), "seats": ended.seats,
                   "tours": {str(tour): n for tour, n in ended.tours.items()}, "ids": ended.ids,
                   "codes": ended.codes},
        )
        if len(ended) < batch_size:
            return expired, seats, batches, False
