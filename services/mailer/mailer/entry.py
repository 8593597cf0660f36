"""Console entry point: ``mailer`` runs the Dramatiq workers of queue ``emails``."""

from __future__ import annotations

import sys

from antrian.workers import exec_worker


def worker() -> None:
    """Run the Dramatiq workers of queue emails; extra arguments go to dramatiq."""
    exec_worker("mailer", "mailer.worker", sys.argv[1:])
