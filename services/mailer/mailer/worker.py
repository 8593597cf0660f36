"""mailer's broker module, loaded by ``dramatiq mailer.worker`` in every worker process."""

from __future__ import annotations

from dramatiq.middleware import Middleware
from dramatiq.middleware.prometheus import Prometheus

from antrian.config import load_settings
from antrian.logging import configure_logging
from antrian.runtime.broker import make_broker


class CloseSmtpConnections(Middleware):
    """Each worker thread says QUIT on its SMTP connection as it stops, instead of just dropping it."""

    def before_worker_thread_shutdown(self, broker, thread):
        actors.close_transport()


settings = load_settings()
configure_logging("mailer", settings.log_level)
broker = make_broker(settings, extra_middleware=[Prometheus(), CloseSmtpConnections()])

from mailer import actors  # noqa: E402 - actors bind to the broker made just above

actors.configure(settings)
