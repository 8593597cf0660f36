"""RateLimiter: at most ``rate`` calls per second across every process of every host, the budget kept in PostgreSQL.

antrian has no Redis, and a limit such as ``UPSTREAM_RATE_LIMIT`` holds for every sync worker at once, so the
shared state is one row of ``rate_limits`` per limit: GCRA's theoretical arrival time (``tat``), the moment by
which every token handed out so far is spent at the limit's pace. Asking the database for each token would cost
a round trip per call, so a process reserves a *lease* of ``k`` tokens with one upsert that moves ``tat`` on by
``k / rate`` seconds; the lease's window starts at the old ``tat`` (or now, if that is past). Leases never
overlap, whichever process took them, and that is the whole guarantee.

Inside a process, threads share the current lease under a lock. A thread takes a token from it and sleeps
until the window opens if it is ahead; when the lease is used up or its window is over, one thread reserves
the next lease while the others wait. Tokens left in a window that is over are dropped, never used late: late
tokens added to the next windows' would make a burst above the limit. So any 1-second interval sees at most
about ``rate + 2 * most`` calls, ``most = max(1, round(rate * LEASE_S))`` (the largest lease), and a saturated
limit ``rate + most``; tokens go out at :data:`PACE` (95%) of the rate, so at 100/s that is 97 to 99 tokens a
second, leaving room for requests that leave a little after their token.

A lease holds twice the tokens of the last one when that was used up, else a quarter more than it gave out
(at least 1, at most ``most``), and its window lasts at least :data:`LEASE_S`: a limit far above the actual
rate costs a few reservations per second per process and moves ``tat`` on by little more than the calls made,
so that no process waits for another.

The window is converted to this process's monotonic clock from the database's own clock in the same answer
(``starts - now``), so clocks that differ between hosts do not matter; the round trip is taken off at both ends.

A throttled call waits inside its job, which costs no attempt. Every wait is bounded: a thread never waits
longer than ``max_wait_s``, and the reservation runs under the engine's statement and lock timeouts; past
those, or when the database cannot be reached, :class:`~antrian.errors.RateLimitUnavailable` (a transient
error: the job is retried like any other database outage). With no rate the limiter does nothing at all.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from antrian.config import Settings
from antrian.db.engine import engine_for
from antrian.errors import RateLimitUnavailable

if TYPE_CHECKING:  # not at run time: prometheus_client must be imported only once the process set up its metrics
    from prometheus_client import Histogram

#: Seconds of the limit's budget one lease holds at most (``most = rate * LEASE_S`` tokens), and the shortest
#: window a lease is usable in. Smaller: closer to the limit over short intervals, more reservations.
LEASE_S = 0.02
#: The share of the rate tokens are handed out at: requests leave a little after their token (a thread scheduled late,
#: a connection opened), so a limit met exactly at the client is exceeded at the server; 5% below leaves that room.
PACE = 0.95
#: The longest a thread waits for a token by default, in seconds. Keep it well below the job's time limit.
MAX_WAIT_S = 60.0

#: Reserve ``:span`` seconds of the limit ``:name``: move its ``tat`` on from now or from where it stands, if later.
#: ``ahead``: how far the new ``tat`` lies beyond the statement's time (the database's clock), in seconds.
_RESERVE = text(
    "INSERT INTO rate_limits AS limits (name, tat) VALUES (:name, statement_timestamp() + make_interval(secs => :span))"
    " ON CONFLICT (name) DO UPDATE"
    " SET tat = greatest(limits.tat, statement_timestamp()) + make_interval(secs => :span)"
    " RETURNING extract(epoch FROM limits.tat - statement_timestamp())::float8 AS ahead"
)


class RateLimiter:
    """Hands out tokens at ``rate`` per second, shared by every process that uses the same ``name``.

    Parameters:
      name(str): the limit's row in ``rate_limits`` (``upstream``, ``smtp``).
      rate(float | None): tokens per second; None: no limit (:meth:`acquire` returns at once, no SQL, no lock).
      settings(Settings): where the database is, and its timeouts.
      max_wait_s(float): the longest :meth:`acquire` waits before it raises RateLimitUnavailable.
      lease_s(float): :data:`LEASE_S`.
    """

    def __init__(self, name: str, rate: float | None, *, settings: Settings, max_wait_s: float = MAX_WAIT_S,
                 lease_s: float = LEASE_S) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"a rate limit must be positive: {rate!r}")
        self.name = name
        self.rate = rate
        self.settings = settings
        self.max_wait_s = max_wait_s
        self.lease_s = lease_s
        #: The most tokens one lease holds.
        self.most = max(1, round(rate * lease_s)) if rate is not None else 0
        self._reset()
        if rate is not None:
            # A process forked from one that used the limiter starts with no lease and no connection of its own.
            os.register_at_fork(after_in_child=functools.partial(_reset_in_child, weakref.ref(self)))

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._engine: Engine | None = None
        self._observe: Callable[[float], None] | None = None
        # The current lease, on the monotonic clock: usable from _start to _end; _size tokens, _left of them left.
        self._start = self._end = 0.0
        self._size = self._left = 0
        #: The thread reserving the next lease (the others wait for it), if one is.
        self._reserver: int | None = None

    def acquire(self) -> float:
        """Take one token, waiting for it if need be; return the seconds waited.

        Raises RateLimitUnavailable when the token would come after ``max_wait_s`` or the database cannot give one.
        """
        if self.rate is None:
            return 0.0
        began = time.monotonic()
        deadline = began + self.max_wait_s
        me = threading.get_ident()
        try:
            with self._condition:
                start, size = self._wait_for_token(deadline, me)
            if size:
                start = self._take_new_lease(size, deadline)
        except BaseException:
            # Whatever stopped this thread (the database, its bound, the job's time limit raised into it), the next
            # lease must not stay promised by it: a waiting thread reserves it instead.
            with self._condition:
                if self._reserver == me:
                    self._reserver = None
                    self._condition.notify_all()
            raise
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        waited = time.monotonic() - began
        self._observed()(waited)
        return waited

    def _wait_for_token(self, deadline: float, me: int) -> tuple[float, int]:
        """Under the lock: a token of the current lease, as (its window's start, 0), or (0, the size of the lease
        this thread is to reserve) when the lease is used up or its window is over (what is left of it is dropped)."""
        while True:
            now = time.monotonic()
            if self._left > 0 and now < self._end:
                if self._start > deadline:
                    raise self._too_long()
                self._left -= 1
                return self._start, 0
            if self._reserver is None:
                self._reserver = me
                used = self._size - self._left
                # Used up: twice as many (the demand is higher, or the limit binds); else a quarter more than it gave.
                return 0.0, min(self.most, max(1, 2 * used if self._left == 0 else used + used // 4 + 1))
            if now >= deadline:
                raise self._too_long()
            self._condition.wait(deadline - now)

    def _take_new_lease(self, size: int, deadline: float) -> float:
        """Reserve a lease of ``size`` tokens, make it the current one and take its first token; return its start."""
        start, end = self._reserve(size)
        with self._condition:
            # The thread that reserved takes its token even if the window is already over (a slow answer):
            # every reservation gives at least one call, so a slow database slows the calls but never stops them.
            self._start, self._end, self._size, self._left = start, end, size, size - 1
            self._reserver = None
            self._condition.notify_all()
            if start > deadline:
                self._left = size  # for the others; this thread gives up
                raise self._too_long()
        return start

    def _reserve(self, size: int) -> tuple[float, float]:
        """One upsert: the window of ``size`` tokens, as (start, end) on this process's monotonic clock."""
        assert self.rate is not None
        span = size / (self.rate * PACE)
        engine = self._engine
        if engine is None:
            # Made here, after Dramatiq forked, and only by the reserving thread: one connection is enough.
            engine = self._engine = engine_for(self.settings, pool_size=1, max_overflow=0, autocommit=True)
        sent = time.monotonic()
        try:
            with engine.connect() as connection:
                ahead = float(connection.execute(_RESERVE, {"name": self.name, "span": span}).scalar_one())
        except DBAPIError as exc:
            raise RateLimitUnavailable(
                f"rate limit {self.name!r}: cannot reserve tokens in PostgreSQL: {_first_line(exc.orig or exc)}"
            ) from exc
        received = time.monotonic()
        # The database's "now" happened between sent and received: taking it as late as it may have been for the
        # start, and as early as it may have been for the end, never widens the window.
        starts_in = ahead - span
        return received + starts_in, sent + starts_in + max(span, self.lease_s)

    def _too_long(self) -> RateLimitUnavailable:
        return RateLimitUnavailable(
            f"rate limit {self.name!r} ({self.rate:g}/s) gave no token within {self.max_wait_s:g}s; try again later"
        )

    def _observed(self) -> Callable[[float], None]:
        observe = self._observe
        if observe is None:
            observe = self._observe = _wait_seconds().labels(self.name).observe
        return observe

    def close(self) -> None:
        """Close the limiter's database connection (a process that ends, a test)."""
        if self._engine is not None:
            self._engine.dispose()


def _reset_in_child(limiter: weakref.ref[RateLimiter]) -> None:
    alive = limiter()
    if alive is not None:
        alive._reset()


_histogram: Histogram | None = None
_histogram_lock = threading.Lock()


def _wait_seconds() -> Histogram:
    """``antrian_rate_limit_wait_seconds{limit}``, made at first use: prometheus_client is imported only then,
    once the worker set up its metrics folder."""
    global _histogram
    with _histogram_lock:
        if _histogram is None:
            from prometheus_client import Histogram

            _histogram = Histogram(
                "antrian_rate_limit_wait_seconds",
                "Time a call waited for a token of its rate limit (UPSTREAM_RATE_LIMIT, SMTP_RATE_LIMIT), by limit.",
                ["limit"],
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            )
        return _histogram


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


__all__ = ["LEASE_S", "MAX_WAIT_S", "RateLimiter"]
