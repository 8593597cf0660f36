"""Reconciliation: ask the gateway about every booking whose payment may have been missed, and apply its answer.

A notification can be lost for good: PostgreSQL away for longer than the gateway keeps retrying,
a proxy dropping it. Then a paid booking would expire and its seats be sold again. So, on a
schedule (``reconcile-payments``, every ``PAYMENT_RECONCILE_SECONDS``), the status API is asked about
every booking pending for more than a minute and every booking that expired in the last 24 hours,
and its answer goes through the same code path as a notification's
(:func:`antrian.bookings.payments.apply`): a paid order is marked paid and gets its e-ticket, once;
a paid order whose booking expired and whose seats are gone is recorded as money to refund.

Bookings are read in batches: the pending ones first, then the expired ones, newest expiry first
(a late payment is likeliest soon after the deadline). Several requests are in flight at once, at
most ``rate_per_s`` a second; a 429 makes every thread wait what the gateway asked. A run stops
taking new batches once its ``budget_s`` is spent, so a busy day's tens of thousands of expired
bookings end a run short of its time limit instead of failing it; the oldest are then left to the
next run (found by ``make soak``: 55,000 expired bookings took one run past its 240 s limit). Two
runs at once are safe: applying a confirmed status is idempotent under the booking's row lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, TextClause, text

from antrian.bookings import payments
from antrian.bookings.gateway import GatewayUnavailable, StatusApi
from antrian.errors import DependencyUnavailable, InvalidInput, NotFound

logger = logging.getLogger(__name__)

#: A pending booking younger than this is left to its notification.
PENDING_FOR = "1 minute"
#: An expired booking older than this is no longer asked about.
EXPIRED_WITHIN = "24 hours"
#: Bookings read per batch, requests in flight at once, and requests a second at most (the gateway's limit).
BATCH_SIZE, CONCURRENCY, RATE_PER_S = 500, 16, 400.0
#: Times one order is asked again after a 429 before it is left for the next run.
RATE_LIMITED_ATTEMPTS = 5

_PENDING = text(
    f"""SELECT id, code, expires_at FROM bookings
        WHERE status = 'pending' AND created_at < now() - interval '{PENDING_FOR}' AND id > :id
        ORDER BY id LIMIT :limit"""
)
_EXPIRED = text(
    f"""SELECT id, code, expires_at FROM bookings
        WHERE status = 'expired' AND expires_at > now() - interval '{EXPIRED_WITHIN}'
          AND (expires_at, id) < (:at, :id)
        ORDER BY expires_at DESC, id DESC LIMIT :limit"""
)
_COUNT = text(
    f"""SELECT count(*) FROM bookings
        WHERE (status = 'pending' AND created_at < now() - interval '{PENDING_FOR}')
           OR (status = 'expired' AND expires_at > now() - interval '{EXPIRED_WITHIN}')"""
)
#: Where the newest-first walk through the expired bookings starts.
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _batches(engine: Engine, batch_size: int) -> Iterator[list[str]]:
    """The candidates' codes in batches: pending bookings by id, then expired ones, newest expiry first."""
    cursor: dict[str, Any] = {"id": 0}
    while rows := _read(engine, _PENDING, cursor, batch_size):
        yield [row.code for row in rows]
        cursor = {"id": rows[-1].id}
    cursor = {"at": _LATEST, "id": 0}
    while rows := _read(engine, _EXPIRED, cursor, batch_size):
        yield [row.code for row in rows]
        cursor = {"at": rows[-1].expires_at, "id": rows[-1].id}


def _read(engine: Engine, query: TextClause, cursor: dict[str, Any], limit: int) -> Sequence[Row[Any]]:
    with engine.connect() as connection:
        return connection.execute(query, {**cursor, "limit": limit}).all()


@dataclass
class Reconciled:
    """What one run did: orders asked about, outcomes applied, orders the gateway does not know, orders
    left for the next run (the gateway unavailable for them), and expired ones not reached in the budget."""

    asked: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    deferred: int = 0
    not_reached: int = 0


class _Pace:
    """At most ``rate_per_s`` requests a second across threads, and a shared pause after a 429."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s
        self.next_at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            at = max(self.next_at, now)
            self.next_at = at + self.interval
        if at > now:
            time.sleep(at - now)

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.next_at = max(self.next_at, time.monotonic() + seconds)


def reconcile(engine: Engine, status_api: StatusApi, *, batch_size: int = BATCH_SIZE,
              concurrency: int = CONCURRENCY, rate_per_s: float = RATE_PER_S,
              budget_s: float | None = None) -> Reconciled:
    """Ask about every candidate booking (within ``budget_s`` seconds) and apply what the gateway confirms.

    Raises :class:`~antrian.errors.DependencyUnavailable` when the gateway answered none of the
    orders asked about (it is down: the run failed, and an alert counts failed runs).
    """
    done = Reconciled()
    pace = _Pace(rate_per_s)
    lock = threading.Lock()

    def one(code: str) -> None:
        outcome = _ask(status_api, engine, code, pace)
        with lock:
            done.asked += 1
            if outcome is None:
                done.unknown += 1
            elif outcome == "deferred":
                done.deferred += 1
            else:
                done.outcomes[outcome] += 1

    stop_at = None if budget_s is None else time.monotonic() + budget_s
    with engine.connect() as connection:
        candidates = connection.execute(_COUNT).scalar_one()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reconcile") as pool:
        for codes in _batches(engine, batch_size):
            if stop_at is not None and time.monotonic() >= stop_at:
                done.not_reached = max(0, candidates - done.asked)
                break
            list(pool.map(one, codes))
    if done.asked and done.deferred == done.asked:
        raise DependencyUnavailable(f"the payment gateway answered none of the {done.asked} orders asked about")
    logger.info("payments reconciled: %d asked, %s, %d unknown to the gateway, %d left for the next run",
                done.asked, dict(done.outcomes) or "nothing changed", done.unknown,
                done.deferred + done.not_reached,
                extra={"event": "payments_reconciled", "asked": done.asked, "outcomes": dict(done.outcomes),
                       "unknown": done.unknown, "deferred": done.deferred, "not_reached": done.not_reached})
    return done


def _ask(status_api: StatusApi, engine: Engine, code: str, pace: _Pace) -> str | None:
    """The outcome of applying what the gateway says of ``code``; None when it knows no such order."""
    for _ in range(RATE_LIMITED_ATTEMPTS):
        pace.wait()
        try:
            confirmed = status_api.status(code)
        except GatewayUnavailable as exc:
            if exc.retry_after_s is not None:  # 429: everyone waits, then this order is asked again
                pace.pause(exc.retry_after_s)
                continue
            logger.warning("payment of %s not reconciled this time: %s", code, exc)
            return "deferred"
        if confirmed is None:
            return None
        try:
            result = payments.apply(engine, confirmed)
        except (InvalidInput, NotFound) as exc:  # an amount that does not match, or is not a number
            logger.warning("payment of %s not reconciled: %s", code, exc)
            return "deferred"
        return "duplicate" if result.duplicate else result.outcome
    return "deferred"
