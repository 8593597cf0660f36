"""KeepFailedJobs: a message that runs out of attempts becomes a row of ``failed_jobs``, not a dead letter.

Dramatiq on RabbitMQ rejects such a message into ``<queue>.XQ``, where nobody can list or replay it
and it expires after a week. This middleware stores it instead and lets it be acknowledged, so the
row is the one copy. Only when the database cannot take it is the message rejected as before; the
worker's :class:`DeadLetterImporter` then moves it from ``.XQ`` into the table once it can.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import xq_name
from dramatiq.errors import DecodeError
from dramatiq.middleware import Middleware, SkipMessage
from sqlalchemy import Engine

from antrian.amqp.connection import connection_parameters
from antrian.config import Settings
from antrian.db.engine import engine_for, retry_on_disconnect
from antrian.jobs import failed_jobs

logger = logging.getLogger(__name__)

#: Seconds a worker thread keeps trying to store a failed job while PostgreSQL is away, before it
#: leaves the message to RabbitMQ's dead-letter queue instead.
STORE_WINDOW_S = 10.0
#: Seconds between two looks into the dead-letter queues.
IMPORT_INTERVAL_S = 10.0
#: Characters of an exception's message kept in ``failed_jobs.exception``.
EXCEPTION_LENGTH = 2000


def describe(exception: BaseException | None, *, attempts: int) -> failed_jobs.Failure:
    """The stored account of a failure: ``Type: message``, its traceback (with causes), where it happened."""
    if exception is None:
        summary, trace = "failed without an exception", ""
    else:
        text = str(exception).strip()
        summary = f"{type(exception).__name__}: {text}" if text else type(exception).__name__
        trace = "".join(traceback.format_exception(exception))
    return failed_jobs.Failure(exception=summary[:EXCEPTION_LENGTH], traceback=trace, attempts=attempts,
                               worker=_worker())


def _worker() -> str:
    """``host:pid`` of this worker process, as failed_jobs.worker records it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class KeepFailedJobs(Middleware):
    """Store each message Dramatiq gives up on in ``failed_jobs``; forget the row when it runs again.

    Put it first in the broker's middleware: Dramatiq runs the ``after_`` hooks in reverse order, so this
    one sees the message once Retries has given up on it, and once TimeLimit has stopped its timer (a
    time limit must not strike while the failure is being stored).

    Parameters:
      settings(Settings): where ``failed_jobs`` is (and its timeouts), and RabbitMQ, for the dead-letter
        importer's own connection.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker_url = settings.broker_url
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._importer: DeadLetterImporter | None = None

    def engine(self) -> Engine:
        """This process's small engine, made on first use (after Dramatiq forked its worker processes)."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = engine_for(self.settings, pool_size=1, max_overflow=10, autocommit=True)
        return self._engine

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.options.get(failed_jobs.RETRIED_FROM) is not None:
            # A retried message runs again: it is not a failed job any more (should it fail again, it is
            # stored again). This also clears the row of a retry whose confirm was lost but whose message came.
            self._forget(message)
        elif getattr(message, "redelivered", False) and self._stored(message) is not None:
            # Its failure was stored and then its ack was lost (a crash, a dropped connection): the row is
            # the one copy, so this copy is acknowledged without running.
            logger.info("message %s is stored as a failed job already; its redelivery is acknowledged",
                        message.message_id, extra={"event": "failed_job_redelivered", "message_id": message.message_id})
            raise SkipMessage("stored as a failed job already")

    def _forget(self, message: dramatiq.MessageProxy) -> None:
        def work() -> None:
            with self.engine().connect() as connection:
                failed_jobs.forget(connection, message.message_id)

        try:
            retry_on_disconnect(work, window_s=STORE_WINDOW_S)
        except Exception as exc:  # noqa: BLE001 - the job runs anyway; a stale row is retried as a duplicate
            logger.warning("could not clear the failed job of message %s: %s", message.message_id, exc)

    def _stored(self, message: dramatiq.MessageProxy) -> int | None:
        try:
            with self.engine().connect() as connection:
                return failed_jobs.stored_id(connection, message.message_id)
        except Exception as exc:  # noqa: BLE001 - unknown: run it (the jobs are idempotent)
            logger.warning("could not look up message %s in failed_jobs: %s", message.message_id, exc)
            return None

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *,
                              result: Any | None = None, exception: BaseException | None = None) -> None:
        if message.failed:
            self._keep(message, exception, attempts=_attempts(broker, message, exception))

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.failed:  # AgeLimit: too old to run
            self._keep(message, getattr(message, "_exception", None), attempts=message.options.get("retries", 0))

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._importer = DeadLetterImporter(
            broker_url=self.broker_url,
            queues=lambda: [q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))],
            store=self.store,
        )
        self._importer.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._importer is not None:
            self._importer.stop()

    def store(self, message: dramatiq.Message[Any] | dramatiq.MessageProxy, failure: failed_jobs.Failure) -> int:
        """Store one failed message (upsert by message id); retried while the database restarts."""

        def work() -> int:
            with self.engine().connect() as connection:
                return failed_jobs.keep(connection, message, failure)

        return retry_on_disconnect(work, window_s=STORE_WINDOW_S)

    def _keep(self, message: dramatiq.MessageProxy, exception: BaseException | None, *, attempts: int) -> None:
        failure = describe(exception, attempts=attempts)
        try:
            job_id = self.store(message, failure)
        except Exception as exc:  # noqa: BLE001 - the message must still go somewhere safe
            logger.error(
                "could not store failed job %s (%s) in failed_jobs: %s; RabbitMQ keeps it in %s until it can",
                message.message_id, message.actor_name, exc, xq_name(message.queue_name),
                extra={"event": "failed_job_not_stored", "message_id": message.message_id},
            )
            return
        message.failed = False  # acknowledged: the row is now the one copy
        from antrian.jobs.metrics import JOBS_FAILED  # prometheus_client only once the worker has set up its metrics

        JOBS_FAILED.labels(message.queue_name, message.actor_name).inc()
        logger.warning(
            "%s(%s) failed after %d attempt(s), kept as failed job %d: %s",
            message.actor_name, _short_args(message), attempts, job_id, failure.exception,
            extra={"event": "job_failed", "failed_job_id": job_id, "message_id": message.message_id,
                   "queue": message.queue_name, "actor": message.actor_name, "attempts": attempts},
        )


def _attempts(broker: dramatiq.Broker, message: dramatiq.MessageProxy, exception: BaseException | None) -> int:
    """How many times the message ran: Retries counts every attempt but one that ``throws`` ended."""
    retries: int = message.options.get("retries", 0)
    if exception is None or isinstance(exception, SkipMessage):
        return max(retries, 1)
    try:
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws")
    except Exception:  # noqa: BLE001 - an unknown actor: Retries did not count it either
        return retries + 1
    return retries + 1 if throws and isinstance(exception, throws) else max(retries, 1)


def _short_args(message: dramatiq.MessageProxy) -> str:
    text = ", ".join(repr(arg) for arg in message.args)
    return text if len(text) <= 80 else text[:77] + "..."


def _dead_letter(body: bytes, dead_letters: str,
                 headers: dict[str, Any] | None = None) -> tuple[dramatiq.Message[Any], failed_jobs.Failure]:
    """The message and what is known of its failure; an undecodable body is kept whole (base64) in a
    message of actor ``(undecodable)``, so that it is seen rather than blocking the queue. A message a quorum
    queue dead-lettered for its delivery limit (RabbitMQ's ``x-death`` header) says so."""
    try:
        message = dramatiq.Message.decode(body)
    except DecodeError as exc:
        message = dramatiq.Message(queue_name=dead_letters.removesuffix(".XQ"), actor_name="(undecodable)", args=(),
                                   kwargs={}, options={"body_base64": base64.b64encode(body).decode()})
        return message, failed_jobs.Failure(exception=f"DecodeError: {exc}", traceback="", attempts=1,
                                            worker=_worker())
    earlier = message.options.get("traceback", "")
    deaths = (headers or {}).get("x-death") or [{}]
    if deaths[0].get("reason") == "delivery_limit":
        exception = ("DeliveryLimitReached: RabbitMQ dead-lettered it after QUEUE_DELIVERY_LIMIT deliveries: "
                     "its worker process died while running it each time (killed, out of memory, a crash)")
    else:
        exception = "dead-lettered while failed_jobs was unavailable; its last exception was lost"
    return message, failed_jobs.Failure(
        exception=exception,
        traceback=f"Traceback of an earlier attempt:\n{earlier}" if earlier else "",
        attempts=message.options.get("retries", 0) + 1,
        worker=_worker(),
    )


class DeadLetterImporter(threading.Thread):
    """Moves what RabbitMQ dead-lettered into ``failed_jobs``, every :data:`IMPORT_INTERVAL_S` seconds.

    Messages land in ``<queue>.XQ`` only when the store was unavailable as they failed (or from an
    older worker). Each is stored, then acknowledged: a crash in between stores it twice at worst,
    which the upsert by message id makes once.
    """

    def __init__(self, *, broker_url: str, queues: Callable[[], list[str]],
                 store: Callable[[dramatiq.Message[Any], failed_jobs.Failure], int]) -> None:
        super().__init__(name="dead-letter-importer", daemon=True)
        self.broker_url = broker_url
        self.queues = queues
        self._store = store
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(IMPORT_INTERVAL_S):
            try:
                self.import_all()
            except Exception as exc:  # noqa: BLE001 - try again next time
                logger.warning("dead-letter import failed, trying again in %.0f s: %s", IMPORT_INTERVAL_S, exc)

    def import_all(self) -> int:
        """Store and acknowledge every message now in the dead-letter queues; return how many."""
        imported = 0
        connection = pika.BlockingConnection(connection_parameters(self.broker_url))
        try:
            channel = connection.channel()
            for queue_name in self.queues():
                imported += self._import_queue(channel, xq_name(queue_name))
        finally:
            if connection.is_open:
                connection.close()
        return imported

    def _import_queue(self, channel: pika.adapters.blocking_connection.BlockingChannel, dead_letters: str) -> int:
        imported = 0
        while not self._stop.is_set():
            method, properties, body = channel.basic_get(dead_letters)
            if method is None:
                return imported
            message, failure = _dead_letter(body, dead_letters, properties.headers)
            try:
                job_id = self._store(message, failure)
            except Exception:
                channel.basic_nack(method.delivery_tag, requeue=True)  # back at its place, for the next look
                raise
            channel.basic_ack(method.delivery_tag)
            imported += 1
            logger.warning("imported dead letter %s from %s as failed job %d", message.message_id, dead_letters,
                           job_id, extra={"event": "dead_letter_imported", "failed_job_id": job_id})
        return imported
