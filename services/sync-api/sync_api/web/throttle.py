"""The sign-in throttle: failed sign-ins counted in PostgreSQL per client address and per token prefix (shared by
every sync-api process on every host); past the allowance, sign-ins are refused with 429 until the window ends."""

from __future__ import annotations

import math

from sqlalchemy import Engine, text

from antrian.config import LOGIN_FAILURES_ALLOWED

#: Characters of a presented token that key its count: enough to single out one token under attack, too few to
#: help anyone guess it (the rest is 256 random bits).
PREFIX_LENGTH = 12

_RETRY_AFTER = text(
    """SELECT max(extract(epoch FROM window_started_at + make_interval(secs => :window) - now()))
       FROM login_failures
       WHERE key = ANY(:keys) AND failures >= :allowed AND window_started_at > now() - make_interval(secs => :window)"""
)
_FAIL = text(
    """INSERT INTO login_failures AS f (key, failures, window_started_at) VALUES (:key, 1, now())
       ON CONFLICT (key) DO UPDATE SET
         failures = CASE WHEN f.window_started_at <= now() - make_interval(secs => :window) THEN 1
                         ELSE f.failures + 1 END,
         window_started_at = CASE WHEN f.window_started_at <= now() - make_interval(secs => :window) THEN now()
                                  ELSE f.window_started_at END
       RETURNING failures"""
)
#: Counts of windows long over are of no use: dropped as new failures come (the table stays as small as an attack).
_FORGET = text("DELETE FROM login_failures WHERE window_started_at < now() - interval '1 day'")


def keys(address: str, candidate: str | None) -> list[str]:
    """What one sign-in counts against: its address, and the presented token's prefix when there is one."""
    found = [f"address:{address}"]
    if candidate and len(candidate) >= PREFIX_LENGTH:
        found.append(f"prefix:{candidate[:PREFIX_LENGTH]}")
    return found


def retry_after(engine: Engine, keys: list[str], *, window_s: float) -> int | None:
    """Seconds until sign-ins under ``keys`` are taken again, or None when they are taken now."""
    with engine.connect() as connection:
        left = connection.execute(
            _RETRY_AFTER, {"keys": keys, "window": window_s, "allowed": LOGIN_FAILURES_ALLOWED}
        ).scalar_one()
    return None if left is None else max(1, math.ceil(float(left)))


def fail(engine: Engine, keys: list[str], *, window_s: float) -> int:
    """Count one failed sign-in against each key (a window that is over starts again); return the highest count."""
    with engine.begin() as connection:
        connection.execute(_FORGET)
        return max(connection.execute(_FAIL, {"key": key, "window": window_s}).scalar_one() for key in keys)
