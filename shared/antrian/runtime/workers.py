"""Start a Dramatiq worker service: check its dependencies, prepare metrics, become ``dramatiq``, boot.

:func:`exec_worker` is each worker's console entry point; :func:`boot` is the whole body of the
module that ``dramatiq`` then loads in each of its processes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from antrian.config import export, load_settings
from antrian.logging import configure_logging
from antrian.metrics import prepare_multiprocess_dir
from antrian.runtime import heartbeat
from antrian.runtime.broker import make_broker
from antrian.runtime.pauses import HonourPauses
from antrian.runtime.startup import settings_or_exit
from antrian.runtime.wait_time import MeasureWait

#: Dramatiq's default number of worker threads per process.
DRAMATIQ_DEFAULT_THREADS = 8

#: Milliseconds a stopping worker waits for in-flight messages when its service names no time limit.
SHUTDOWN_TIMEOUT_MS = 25_000


def exec_worker(
    service: str, module: str, argv: list[str], *, require: tuple[str, ...] = (),
    shutdown_timeout_ms: int = SHUTDOWN_TIMEOUT_MS,
) -> None:
    """Replace this process with ``dramatiq module argv...`` so that signals reach Dramatiq directly.

    Parameters:
      service(str): the deployable's name, for messages and the metrics port default.
      module(str): the module that declares the broker and the actors (its body is :func:`boot`).
      argv(list[str]): more arguments for dramatiq (``--processes``, ``--threads``, ...).
      require(tuple[str, ...]): settings this worker cannot run without.
      shutdown_timeout_ms(int): how long a stopping worker waits for the messages it is running: the
        longest time limit of its actors' retry policies, so that a deploy cuts no job off.
    """
    settings = settings_or_exit(service, require=require)
    prepare_multiprocess_dir(settings, service, settings.metrics_port_for(service))
    inherited = {"ANTRIAN_HEARTBEAT_DIR": str(heartbeat.prepare(service))}
    if settings.db_pool_size is None:
        # One connection per worker thread: a smaller pool closes and reopens connections all the time.
        inherited["DB_POOL_SIZE"] = str(_threads(argv))
    export(inherited)
    args = [sys.executable, "-m", "dramatiq", module, "--worker-shutdown-timeout", str(shutdown_timeout_ms), *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)


def boot(service: str, actors: str, *, middleware: Sequence[Middleware] = ()) -> RabbitmqBroker:
    """Set up one worker process: settings, JSON logs, the broker (with Prometheus, paused queues and the wait time),
    then the actors.

    Parameters:
      service(str): the deployable's name, in every log line.
      actors(str): the module whose actors this worker runs; its ``configure(settings)`` is called.
      middleware(Sequence[Middleware]): more middleware for this service's broker.
    """
    # Imported only now: prometheus_client must see the metrics folder exec_worker exported.
    from dramatiq.middleware.prometheus import Prometheus

    settings = load_settings()
    configure_logging(service, settings.log_level)
    pauses = HonourPauses(settings)  # before MeasureWait: a message given back has not waited its last yet
    waits = MeasureWait(settings)  # every message's wait, for the histogram and /api/queues
    broker = make_broker(settings, extra_middleware=[Prometheus(), pauses, waits, *middleware], fail_fast=False,
                         is_paused=pauses.is_paused)
    importlib.import_module(actors).configure(settings)  # the actors bind to the broker made just above
    return broker


def _threads(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", "-t", type=int, default=DRAMATIQ_DEFAULT_THREADS)
    known, _ = parser.parse_known_args(argv)
    threads: int = known.threads
    return max(threads, 1)
