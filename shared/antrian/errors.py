"""Every error antrian raises on purpose, in one hierarchy.

Each class says which HTTP status a route answers it with (:attr:`AntrianError.status`) and what
else the answer carries (:meth:`AntrianError.details`, and :meth:`AntrianError.headers`: ``Retry-After`` for
an error that says when to try again); sync-api maps them all in one handler
(``sync_api.web.errors``), and the ``antrian`` command turns them into one line and an exit code.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class AntrianError(Exception):
    """Base class for antrian's own errors: a 500 unless a subclass says otherwise."""

    #: The HTTP status that a route answers this error with.
    status: ClassVar[int] = 500
    #: Seconds after which the caller may try again, sent as ``Retry-After`` (whole seconds, rounded up); None: no
    #: such header. A class sets it for all its errors, an instance (from what an upstream asked for) for itself.
    retry_after_s: float | None = None

    def details(self) -> dict[str, Any]:
        """Fields the JSON answer carries beside ``error`` (the message)."""
        return {}

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries: ``Retry-After`` when the error says when to try again."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(0, math.ceil(self.retry_after_s)))}


class InvalidInput(AntrianError):
    """Raised when a value a caller gave cannot be used; the message names it and says why."""

    status = 400


class NotFound(AntrianError):
    """Raised when a caller names something that does not exist."""

    status = 404


class Conflict(AntrianError):
    """Raised when a request cannot be done in the current state of things."""

    status = 409


class ConfigError(AntrianError):
    """Raised when an environment variable is missing or has a value antrian cannot use."""


class DependencyUnavailable(AntrianError):
    """Raised when the database or the broker cannot be reached."""

    status = 503


class BrokerBlocked(DependencyUnavailable):
    """Raised when RabbitMQ blocks publishing (a memory or disk alarm) for longer than the blocked-connection
    timeout: the message was not taken, and trying again once the alarm clears may succeed."""

    retry_after_s = 5


class RateLimitUnavailable(DependencyUnavailable):
    """Raised when a rate limit (:mod:`antrian.rate_limit`) gives no token: its shared budget in PostgreSQL could
    not be reserved (the database is unreachable or busy), or the token would come later than the limiter waits
    (more demand than the limit serves in that time). Nothing was sent: another attempt shortly may succeed."""

    retry_after_s = 2


class Busy(AntrianError):
    """Raised when what a request needs stays held by others for longer than it waits (PostgreSQL's
    ``lock_timeout`` or ``statement_timeout``): nothing was changed, and trying again shortly may succeed."""

    status = 503
    retry_after_s = 2


class TourBusy(Busy):
    """Raised when a booking cannot get its tour's row within the lock timeout (another session holds it)."""

    def __init__(self, tour_id: int) -> None:
        super().__init__(f"tour {tour_id} is busy; try again shortly")
        self.tour_id = tour_id


class PublishError(AntrianError):
    """Raised when RabbitMQ refuses (nacks or returns) a message we published with confirms."""

    status = 503


class RunAlreadyRunning(Conflict):
    """Raised when a sync run is requested while another one is still running."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"sync run {run_id} is still running")
        self.run_id = run_id

    def details(self) -> dict[str, Any]:
        return {"id": self.run_id}
