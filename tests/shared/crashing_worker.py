"""A worker for the delivery-limit test: ``crash(name)`` kills its own process when ``name`` is ``poison``, else
appends ``name`` to the file ``$CRASH_TEST_LOG`` (one line per run). Started like a service's worker:
``python -c "...exec_worker('mailer', 'tests.shared.crashing_worker', ...)"``."""

from __future__ import annotations

import os
import signal

import dramatiq

from antrian.runtime.workers import boot

QUEUE = "crash-test"


def configure(settings) -> None:
    """The actor, bound to the broker :func:`boot` made."""

    @dramatiq.actor(queue_name=QUEUE, actor_name="crash", max_retries=0)
    def crash(name: str) -> None:
        if name == "poison":
            os.kill(os.getpid(), signal.SIGKILL)
        with open(os.environ["CRASH_TEST_LOG"], "a") as log:
            log.write(name + "\n")


broker = boot("mailer", __name__)
