"""The schedule: which message is enqueued how often, safely from any number of schedulers.

Laravel's scheduler, for Dramatiq: ``antrian schedule list`` / ``run`` / ``work`` are its
``schedule:list`` / ``schedule:run`` / ``schedule:work``. Each task's time is cut into slots of
``every_seconds`` aligned to the Unix epoch (every 300 s: at :00, :05, :10, ...). Whoever first
claims a slot in PostgreSQL enqueues the task, with a publisher confirm, inside the claiming
transaction; everyone else finds the slot claimed. So a scheduler process, a Kubernetes CronJob
running ``antrian schedule run`` and an operator typing it can all run at once, and a task is still
enqueued once per slot ("on one server"). An enqueue that fails rolls its claim back: the next
tick tries again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import dramatiq
import dramatiq.errors
from sqlalchemy import Engine, select, text
from sqlalchemy.dialects.postgresql import insert

from antrian.config import Settings
from antrian.db.models import ScheduledTaskRun
from antrian.errors import DependencyUnavailable
from antrian.messages import EXPIRE_UNPAID_BOOKINGS, PRUNE_FAILED_JOBS, RECONCILE_PAYMENTS, Contract

logger = logging.getLogger(__name__)


#: How often failed jobs past their retention are pruned: hourly, so none outlives it by more than an hour.
PRUNE_EVERY_SECONDS = 3600


@dataclass(frozen=True)
class ScheduledTask:
    name: str
    contract: Contract
    every_seconds: int
    description: str


def tasks(settings: Settings) -> list[ScheduledTask]:
    """Every scheduled task, with its period from the settings."""
    return [
        ScheduledTask(
            name="expire-unpaid-bookings",
            contract=EXPIRE_UNPAID_BOOKINGS,
            every_seconds=settings.expiry_sweep_seconds,
            description="expire pending bookings past their deadline, seats back (EXPIRY_SWEEP_SECONDS)",
        ),
        ScheduledTask(
            name="reconcile-payments",
            contract=RECONCILE_PAYMENTS,
            every_seconds=settings.payment_reconcile_seconds,
            description="ask the gateway about bookings whose payment may have been missed (PAYMENT_RECONCILE_SECONDS)",
        ),
        ScheduledTask(
            name="prune-failed-jobs",
            contract=PRUNE_FAILED_JOBS,
            every_seconds=PRUNE_EVERY_SECONDS,
            description=f"delete failed jobs older than {settings.failed_jobs_retention_days} days "
                        "(FAILED_JOBS_RETENTION_DAYS)",
        ),
    ]


@dataclass(frozen=True)
class TaskStatus:
    task: ScheduledTask
    last_enqueued_at: datetime | None
    next_due_at: datetime
    now: datetime


def _slot_end(moment: datetime, every_seconds: int) -> datetime:
    """The start of the slot after the one ``moment`` is in."""
    epoch = moment.timestamp()
    return datetime.fromtimestamp((epoch // every_seconds + 1) * every_seconds, tz=moment.tzinfo)


def next_due(task: ScheduledTask, last_enqueued_at: datetime | None, *, now: datetime) -> datetime:
    """When ``task`` is next due, given its last enqueue and the clock's ``now`` (never before ``now``).

    The clock is passed in: :func:`status` passes the database's, the one claims use.
    """
    if last_enqueued_at is None:
        return now
    early = timedelta(seconds=_early(task))
    return max(_slot_end(last_enqueued_at + early, task.every_seconds) - early, now)


def status(engine: Engine, scheduled: list[ScheduledTask]) -> list[TaskStatus]:
    """Each task's last enqueue and next due time, by the database's clock (the one claims use)."""
    with engine.connect() as connection:
        now = connection.execute(text("SELECT now()")).scalar_one()
        last = dict(connection.execute(select(ScheduledTaskRun.name, ScheduledTaskRun.last_enqueued_at)).all())
    result = []
    for task in scheduled:
        previous = last.get(task.name)
        result.append(TaskStatus(task=task, last_enqueued_at=previous, next_due_at=next_due(task, previous, now=now),
                                 now=now))
    return result


#: A slot may be claimed this share of its period early (at most MAX_EARLY_S): a cron job whose clock runs a
#: little ahead of the database's must not find the last slot still current and skip a whole period.
EARLY_SHARE, MAX_EARLY_S = 0.1, 5.0

CLAIM = text(
    """
    UPDATE scheduled_task_runs SET last_enqueued_at = now()
    WHERE name = :name AND (
        last_enqueued_at IS NULL
        OR floor(extract(epoch FROM last_enqueued_at + make_interval(secs => :early)) / :every)
           < floor(extract(epoch FROM now() + make_interval(secs => :early)) / :every)
    )
    RETURNING name
    """
)


def _early(task: ScheduledTask) -> float:
    return min(task.every_seconds * EARLY_SHARE, MAX_EARLY_S)


#: How long a claim waits for another scheduler's claim of the same task (which holds it while it enqueues).
CLAIM_LOCK_TIMEOUT = "10s"


def run_due(engine: Engine, broker: dramatiq.Broker, scheduled: list[ScheduledTask]) -> list[str]:
    """Enqueue each task whose current slot nobody has claimed yet; return the names enqueued.

    Raises DependencyUnavailable when RabbitMQ cannot take the message (the claim is rolled back).
    """
    enqueued = []
    for task in scheduled:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'")
            connection.execute(insert(ScheduledTaskRun).values(name=task.name).on_conflict_do_nothing())
            claim = {"name": task.name, "every": task.every_seconds, "early": _early(task)}
            if connection.execute(CLAIM, claim).first() is None:
                continue
            try:
                # Confirmed by RabbitMQ before the claim commits.
                message = task.contract.send(broker)
            except dramatiq.errors.BrokerError as exc:
                raise DependencyUnavailable(f"cannot enqueue {task.name}: RabbitMQ did not take it ({exc})") from exc
        logger.info("scheduled task %s enqueued", task.name,
                    extra={"event": "task_enqueued", "task": task.name, "message_id": message.message_id})
        enqueued.append(task.name)
    return enqueued


#: Seconds past a slot's start at which the scheduler looks (clock jitter), and at most between looks.
WAKE_MARGIN_S, MAX_SLEEP_S = 0.2, 60.0
#: Seconds between attempts while the database or RabbitMQ is away.
RETRY_S = 5.0


def work(engine: Engine, broker: dramatiq.Broker, scheduled: list[ScheduledTask], stop: threading.Event) -> None:
    """Enqueue what is due, then sleep until the next slot starts, until ``stop`` is set (schedule:work)."""
    while not stop.is_set():
        try:
            run_due(engine, broker, scheduled)
            statuses = status(engine, scheduled)
        except Exception as exc:  # noqa: BLE001 - an outage must not end the scheduler
            logger.warning("scheduler cannot enqueue, retrying in %.0f s: %s", RETRY_S, exc)
            stop.wait(RETRY_S)
            continue
        wait = min((s.next_due_at - s.now for s in statuses), default=timedelta(seconds=MAX_SLEEP_S))
        stop.wait(min(max(wait.total_seconds(), 0) + WAKE_MARGIN_S, MAX_SLEEP_S))
