"""JSON log lines on stderr, one object per line, the same in every process."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

#: Fields every line carries; ``extra={...}`` adds more.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def json_formatter(service: str) -> logging.Formatter:
    return JsonFormatter(
        LOG_FORMAT,
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
        static_fields={"service": service},
        timestamp=False,
    )


def configure_logging(service: str, level: str = "INFO") -> None:
    """Make every root handler write JSON; add one on stderr when there is none yet.

    Dramatiq's worker processes log through a pipe to their parent: we keep that handler and
    only change its format.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    formatter = json_formatter(service)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level)
    for noisy in ("pika", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
