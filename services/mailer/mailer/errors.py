"""Why an email was not sent: permanent failures end the message at once, deferrals are retried."""

from __future__ import annotations

from antrian.errors import AntrianError


class EmailNotSent(AntrianError):
    """Base class of the mailer's own failures."""


class PermanentFailure(EmailNotSent):
    """Another attempt would fail the same way: the message is dead-lettered at once, without a traceback."""


class EmailRefused(PermanentFailure):
    """The SMTP server refused the email for good (a 5xx reply to MAIL, RCPT or DATA)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class BookingNotFound(PermanentFailure):
    """The message names a booking that does not exist."""


class BookingNotPaid(PermanentFailure):
    """An e-ticket was asked for a booking that is not paid."""


class BookingNotRefunded(PermanentFailure):
    """A cancellation was asked for a booking that is not refunded."""


class EmailDeferred(EmailNotSent):
    """The email could not be sent now (a 4xx reply, a dropped or timed out connection): retry later."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ClaimBusy(EmailNotSent):
    """Another attempt is sending this email now (it holds the claim): this job looks again later, without
    spending an attempt, and never ends as done before that attempt sent it or failed.

    ``retry_in_s``: seconds until that claim lapses if its attempt never ends it (its process died).
    """

    def __init__(self, message: str, *, retry_in_s: float) -> None:
        super().__init__(message)
        self.retry_in_s = retry_in_s
