"""Console entry point: ``mailer`` runs the Dramatiq workers of queue ``emails``."""

from __future__ import annotations

import sys

from antrian.runtime.workers import exec_worker
from mailer.emails.retries import EMAIL

#: How long a stopping mailer lets the emails it is sending finish: an email's whole time limit, so no
#: SMTP conversation is cut off by a deploy.
WORKER_SHUTDOWN_TIMEOUT_MS = EMAIL.time_limit_ms


def worker() -> None:
    """Run the Dramatiq workers of queue emails; extra arguments go to dramatiq."""
    exec_worker("mailer", "mailer.worker", sys.argv[1:], shutdown_timeout_ms=WORKER_SHUTDOWN_TIMEOUT_MS)
