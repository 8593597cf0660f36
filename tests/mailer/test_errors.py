"""Which failures another attempt may fix: the actors retry exactly these."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.exc import IntegrityError, OperationalError

from mailer.emails.retries import EMAIL
from mailer.errors import BookingNotFound, BookingNotPaid, EmailDeferred, EmailRefused

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    "failure",
    [
        EmailDeferred("451 4.7.1 greylisted", code=451),
        EmailDeferred("SMTP connection lost: timed out"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
        TimeLimitExceeded(),
        dramatiq.Retry("again"),
    ],
)
def test_transient(failure):
    assert EMAIL.is_transient(failure)


@pytest.mark.parametrize(
    "failure",
    [
        EmailRefused("550 5.1.1 no such mailbox", code=550),
        BookingNotFound("booking 7 does not exist"),
        BookingNotPaid("booking K7QM-2XH9 is pending, not paid"),
        IntegrityError("INSERT", {}, Exception("violates foreign key constraint")),
        KeyError("a bug"),
    ],
)
def test_permanent(failure):
    assert not EMAIL.is_transient(failure)
