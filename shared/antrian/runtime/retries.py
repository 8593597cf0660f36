"""An actor's retry policy, written once: attempts in all, backoff, time limit, and which failures earn a retry.

Dramatiq's defaults (20 retries over 7 days) never fit a job; every antrian actor takes its options
from a :class:`RetryPolicy`, so the attempts it makes and the "after N attempts" its messages say
come from one number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from antrian.db.engine import is_disconnect


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How an actor's message is retried.

    Parameters:
      attempts(int): attempts in all, the first one included (1: never retried).
      time_limit_ms(int): how long one attempt may run; a stopping worker waits as long for it.
      min_backoff_ms(int): the first retry's delay; each next one doubles, up to ``max_backoff_ms``.
      max_backoff_ms(int): kept short: a delayed message waits in a worker's memory, unacknowledged.
      transient(tuple[type[BaseException], ...] | None): the failures another attempt may fix, beside
        the ones it always may (``dramatiq.Retry``, the time limit, a lost database connection);
        ``None`` retries every failure.
      throws(tuple[type[BaseException], ...]): failures that end the message at once, without a traceback.
    """

    attempts: int
    time_limit_ms: int
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 15_000
    transient: tuple[type[BaseException], ...] | None = None
    throws: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt."""
        return self.attempts - 1

    def is_transient(self, exception: BaseException) -> bool:
        """True when another attempt may succeed where this one failed."""
        if self.transient is None:
            return True
        always = (dramatiq.Retry, TimeLimitExceeded)
        return isinstance(exception, (*always, *self.transient)) or is_disconnect(exception)

    def should_retry(self, retries: int, exception: BaseException) -> bool:
        """Dramatiq's ``retry_when``: an attempt is left, and it may help."""
        return retries < self.max_retries and self.is_transient(exception)

    def is_final(self, message: dramatiq.Message[Any] | None) -> bool:
        """Whether the attempt ``message`` is on is its last one."""
        retries = message.options.get("retries", 0) if message is not None else 0
        return bool(retries >= self.max_retries)

    def final_attempt(self) -> bool:
        """Whether the message this worker thread is running is on its last attempt."""
        return self.is_final(CurrentMessage.get_current_message())

    def after_all(self, reason: str) -> str:
        """``reason`` as recorded once every attempt failed: ``"... (after 3 attempts)"``."""
        return f"{reason} (after {self.attempts} attempt{'' if self.attempts == 1 else 's'})"

    def actor_options(self) -> dict[str, Any]:
        """The keyword arguments of ``dramatiq.actor`` that carry this policy."""
        options: dict[str, Any] = {
            "max_retries": self.max_retries,
            "retry_when": self.should_retry,
            "min_backoff": self.min_backoff_ms,
            "max_backoff": self.max_backoff_ms,
            "time_limit": self.time_limit_ms,
        }
        if self.throws:
            options["throws"] = self.throws
        return options


def never_retried(*, time_limit_ms: int) -> RetryPolicy:
    """One attempt only: for work whose next scheduled run is its retry."""
    return RetryPolicy(attempts=1, time_limit_ms=time_limit_ms)


__all__ = ["RetryPolicy", "never_retried"]
