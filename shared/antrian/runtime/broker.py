"""Dramatiq's RabbitmqBroker, set up once per process with publisher confirms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware

from antrian.amqp.broker import FailFastRabbitmqBroker
from antrian.amqp.connection import with_timeouts
from antrian.amqp.pausable import PausableRabbitmqBroker, never
from antrian.config import Settings
from antrian.jobs.keep_failed import KeepFailedJobs
from antrian.runtime import heartbeat


class Heartbeat(Middleware):
    """Each worker process beats for the Kubernetes probes while its threads live (:mod:`antrian.runtime.heartbeat`)."""

    def __init__(self, path: Path, *, interval_s: float) -> None:
        self.path, self.interval_s = path, interval_s
        self._beating: heartbeat.Beating | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._beating = heartbeat.Beating(self.path, worker, interval_s=self.interval_s)
        self._beating.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._beating is not None:
            self._beating.stopped.set()


def make_broker(
    settings: Settings, *, extra_middleware: list[Middleware] | None = None, fail_fast: bool = True,
    is_paused: Callable[[str], bool] = never,
) -> RabbitmqBroker:
    """Build the broker every antrian process uses and make it Dramatiq's global broker.

    Publisher confirms are on: ``send`` returns only once RabbitMQ has the message. Its queues are of
    ``QUEUE_TYPE`` (:mod:`antrian.amqp.queue_types`). A message that
    runs out of attempts is kept in ``failed_jobs`` (see :mod:`antrian.jobs.keep_failed`).

    ``fail_fast`` (the web and the commands): a send that RabbitMQ blocks (a resource alarm) raises
    :class:`antrian.errors.BrokerBlocked` after a few seconds (:mod:`antrian.amqp.broker`), so that a request
    answers 503 instead of hanging. Workers pass False: their sends are Dramatiq's retries, and a retry that
    failed would be lost (Dramatiq acks the original whatever its Retries middleware met), so a worker's
    send waits the alarm out instead; its heartbeat still notices a dead connection. A worker's consumers stop
    taking the messages of a queue for which ``is_paused`` says so (:mod:`antrian.amqp.pausable`).
    """
    middleware = [factory() for factory in default_middleware]
    # First, so that its after-hooks run last: after Retries has given up, after TimeLimit stopped its timer.
    middleware.insert(0, KeepFailedJobs(settings))
    middleware.append(CurrentMessage())
    if settings.antrian_heartbeat_dir:  # a worker started by antrian.runtime.workers.exec_worker
        beats = Heartbeat(Path(settings.antrian_heartbeat_dir), interval_s=settings.antrian_heartbeat_interval_s)
        middleware.append(beats)
    middleware.extend(extra_middleware or [])
    if fail_fast:
        broker: RabbitmqBroker = FailFastRabbitmqBroker(
            url=with_timeouts(settings.broker_url), confirm_delivery=True, middleware=middleware,
            queue_type=settings.queue_type, delivery_limit=settings.queue_delivery_limit,
        )
    else:
        broker = PausableRabbitmqBroker(
            url=with_timeouts(settings.broker_url, blocked_s=None), confirm_delivery=True, middleware=middleware,
            queue_type=settings.queue_type, delivery_limit=settings.queue_delivery_limit, is_paused=is_paused,
        )
    dramatiq.set_broker(broker)
    return broker
