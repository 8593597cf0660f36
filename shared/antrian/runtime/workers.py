"""Start a Dramatiq worker service: check its dependencies, prepare metrics, then become ``dramatiq``."""

from __future__ import annotations

import argparse
import os
import sys

from antrian.metrics import prepare_multiprocess_dir
from antrian.runtime import heartbeat
from antrian.runtime.startup import settings_or_exit

#: Dramatiq's default number of worker threads per process.
DRAMATIQ_DEFAULT_THREADS = 8

#: Milliseconds a stopping worker waits for in-flight messages; below Kubernetes' grace period.
SHUTDOWN_TIMEOUT_MS = 25_000


def exec_worker(
    service: str, module: str, argv: list[str], *, require: tuple[str, ...] = (),
    shutdown_timeout_ms: int = SHUTDOWN_TIMEOUT_MS,
) -> None:
    """Replace this process with ``dramatiq module argv...`` so that signals reach Dramatiq directly.

    Parameters:
      service(str): the deployable's name, for messages and the metrics port default.
      module(str): the module that declares the broker and the actors.
      argv(list[str]): more arguments for dramatiq (``--processes``, ``--threads``, ...).
      require(tuple[str, ...]): settings this worker cannot run without.
      shutdown_timeout_ms(int): how long a stopping worker waits for the messages it is running.
    """
    settings = settings_or_exit(service, require=require)
    prepare_multiprocess_dir(service, settings.metrics_port_for(service))
    heartbeat.prepare(service)
    if settings.db_pool_size is None:
        # One connection per worker thread: a smaller pool closes and reopens connections all the time.
        os.environ["DB_POOL_SIZE"] = str(_threads(argv))
    args = [sys.executable, "-m", "dramatiq", module, "--worker-shutdown-timeout", str(shutdown_timeout_ms), *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)


def _threads(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", "-t", type=int, default=DRAMATIQ_DEFAULT_THREADS)
    known, _ = parser.parse_known_args(argv)
    return max(known.threads, 1)
