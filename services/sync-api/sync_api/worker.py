"""sync-worker's broker module, loaded by ``dramatiq sync_api.worker`` in every worker process."""

from __future__ import annotations

from dramatiq.middleware.prometheus import Prometheus

from antrian.config import load_settings
from antrian.logging import configure_logging
from antrian.runtime.broker import make_broker

settings = load_settings()
configure_logging("sync-worker", settings.log_level)
broker = make_broker(settings, extra_middleware=[Prometheus()])

from sync_api import actors  # noqa: E402 - actors bind to the broker made just above

actors.configure(settings)
