"""Reconciliation: ask the gateway about every booking whose payment may have been missed, and apply its answer.

A notification can be lost for good: PostgreSQL away for longer than the gateway keeps retrying,
a proxy dropping it. Then a paid booking would expire and its seats be sold again. So, on a
schedule (``reconcile-payments``, every ``PAYMENT_RECONCILE_SECONDS``), the status API is asked about
every booking pending for more than a minute and every booking that expired in the last 24 hours,
and its answer goes through the same code path as a notification's
(:func:`antrian.bookings.payments.apply`): a paid order is marked paid and gets its e-ticket, once;
a paid order whose booking expired and whose seats are gone is recorded as money to refund.

Bookings are read in batches by id; several requests are in flight at once, at most
``rate_per_s`` a second; a 429 makes every thread wait what the gateway asked. Two runs at once
are safe: applying a confirmed status is idempotent under the booking's row lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

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

_CANDIDATES = text(
    f"""SELECT id, code FROM bookings
        WHERE id > :after AND (
            (status = 'pending' AND created_at < now() - interval '{PENDING_FOR}')
            OR (status = 'expired' AND expires_at > now() - interval '{EXPIRED_WITHIN}'))
        ORDER BY id LIMIT :limit"""
)


@dataclass
class Reconciled:
    """What one run did: orders asked about, outcomes applied, orders the gateway does not know, and
    orders left for the next run (the gateway unavailable for them)."""

    asked: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    deferred: int = 0


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
              concurrency: int = CONCURRENCY, rate_per_s: float = RATE_PER_S) -> Reconciled:
    """Ask about every candidate booking and apply what the gateway confirms; return what was done.

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

    after = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reconcile") as pool:
        while True:
            with engine.connect() as connection:
                rows = connection.execute(_CANDIDATES, {"after": after, "limit": batch_size}).all()
            if not rows:
                break
            list(pool.map(one, [row.code for row in rows]))
            after = rows[-1].id
    if done.asked and done.deferred == done.asked:
        raise DependencyUnavailable(f"the payment gateway answered none of the {done.asked} orders asked about")
    logger.info("payments reconciled: %d asked, %s, %d unknown to the gateway, %d left for the next run",
                done.asked, dict(done.outcomes) or "nothing changed", done.unknown, done.deferred,
                extra={"event": "payments_reconciled", "asked": done.asked, "outcomes": dict(done.outcomes),
                       "unknown": done.unknown, "deferred": done.deferred})
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
