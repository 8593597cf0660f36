"""Why a student's sync did not succeed: worth another attempt, or not."""

from __future__ import annotations

from antrian.errors import AntrianError


class UpstreamError(AntrianError):
    """Raised when the school API did not give a student's pembayaran."""


class TransientUpstreamError(UpstreamError):
    """Raised for a timeout, a connection error, 429 or 5xx: worth another attempt.

    Parameters:
      retry_after_ms(int | None): the delay the server asked for, if any.
    """

    def __init__(self, reason: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after_ms = retry_after_ms


class PermanentUpstreamError(UpstreamError):
    """Raised for ``{"status": false}``, another 4xx or a body that is not the expected JSON."""


class StudentSyncFailed(AntrianError):
    """Raised after a student's failure is recorded, so that Dramatiq fails the message without retrying."""
