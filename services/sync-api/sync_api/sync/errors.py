"""Why a student's sync did not succeed: worth another attempt, or not."""

from __future__ import annotations

from antrian.errors import AntrianError

#: The longest reason kept for a student's failure (``sync_items.error``, the failed job's exception, the log):
#: a reason may echo what the school API answered, which must not grow a stored row without bound.
MAX_REASON_CHARS = 500


def bounded(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` cut to ``limit`` characters (ending in an ellipsis when cut), without NUL (PostgreSQL text)."""
    if len(reason) > limit:
        reason = reason[: limit - 1] + "\u2026"
    return reason.replace("\x00", "\ufffd")


class UpstreamError(AntrianError):
    """Raised when the school API did not give a student's pembayaran; its reason is :func:`bounded`."""

    def __init__(self, reason: str) -> None:
        super().__init__(bounded(reason))


class TransientUpstreamError(UpstreamError):
    """Raised for a timeout, a connection error, 429 or 5xx: worth another attempt.

    Parameters:
      retry_after_ms(int | None): the delay the server asked for, if any.
    """

    def __init__(self, reason: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(reason)  # bounded by UpstreamError
        self.retry_after_ms = retry_after_ms


class PermanentUpstreamError(UpstreamError):
    """Raised for ``{"status": false}``, another 4xx, a redirect (3xx, never followed), an answer larger than
    ``UPSTREAM_MAX_RESPONSE_BYTES`` or a body that is not the expected JSON."""


class StudentSyncFailed(AntrianError):
    """Raised after a student's failure is recorded, so that Dramatiq fails the message without retrying."""
