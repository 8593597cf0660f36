"""``antrian jobs`` and ``antrian queues``: Laravel's queue:failed, queue:retry, queue:flush and queue:monitor."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import click
import pika
import pika.exceptions

from antrian.access.audit import command_actor
from antrian.amqp import connection as amqp
from antrian.amqp import migrate
from antrian.cli.output import moment, or_exit, plural, table
from antrian.config import Settings
from antrian.db import engine as db
from antrian.errors import DependencyUnavailable, InvalidInput
from antrian.jobs import failed_jobs, pauses
from antrian.jobs.queue_stats import SPEC_QUEUES
from antrian.messages import QUEUES
from antrian.runtime.pauses import POLL_INTERVAL_S
from antrian.runtime.startup import guarded, settings_or_exit

#: Characters of an exception shown per line of ``antrian jobs failed``.
EXCEPTION_WIDTH = 70

#: A command's function, before ``click.command`` makes it one (click's own ``FC``).
F = TypeVar("F", bound=Callable[..., Any])


def _queue_option(help_text: str) -> Callable[[F], F]:
    return click.option("--queue", "queue", type=click.Choice(SPEC_QUEUES), help=help_text)


@click.group()
def jobs() -> None:
    """Failed jobs: list them, retry them, forget one, flush them."""


@jobs.command("failed")
@_queue_option("Only this queue's failed jobs.")
@click.option("--search", "search", metavar="TEXT",
              help="Only jobs whose arguments or exception contain TEXT (a booking id, an error).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per failed job, traceback included.")
def failed(queue: str | None, search: str | None, limit: int, as_json: bool) -> None:
    """List failed jobs, newest first: what failed and why."""
    settings = settings_or_exit("antrian jobs failed", broker=False)
    engine = db.engine_for(settings)
    items, total = guarded("antrian jobs failed",
                           lambda: failed_jobs.list_failed(engine, queue=queue, search=search, limit=limit))
    if as_json:
        for item in items:
            click.echo(json.dumps(item))
        return
    if not items:
        click.echo("no failed jobs")
        return
    rows = [(str(i["id"]), i["queue"], f"{i['actor']}({_args(i['args'])})", str(i["attempts"]),
             moment(i["failed_at"]), _clip(i["exception"])) for i in items]
    table(("ID", "QUEUE", "JOB", "ATTEMPTS", "FAILED AT (UTC)", "EXCEPTION"), rows)
    shown = f"{len(items)} of {total}" if total > len(items) else str(total)
    click.echo(f"{shown} failed job{'s' if total != 1 else ''}; `antrian jobs show ID` prints one's traceback")


@jobs.command("show")
@click.argument("job_id", type=click.IntRange(min=1))
def show(job_id: int) -> None:
    """Print one failed job in full, with its traceback."""
    settings = settings_or_exit("antrian jobs show", broker=False)
    engine = db.engine_for(settings)
    job = or_exit("antrian jobs show", lambda: failed_jobs.get(engine, job_id))
    for key in ("id", "message_id", "queue", "actor", "args", "kwargs", "attempts", "worker", "enqueued_at",
                "failed_at", "exception"):
        click.echo(f"{key + ':':<12} {job[key]}")
    click.echo(job["traceback"].rstrip())


@jobs.command("retry")
@click.argument("job_ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job (of --queue only, if given).")
@_queue_option("With --all: only this queue's failed jobs.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=failed_jobs.RETRY_BATCH, show_default=True,
              help="With --all: jobs published per transaction, each batch confirmed by RabbitMQ.")
def retry(job_ids: tuple[int, ...], retry_all: bool, queue: str | None, batch_size: int) -> None:
    """Put failed jobs back on their queues, each with a fresh attempt count."""
    if bool(job_ids) == retry_all:
        raise click.UsageError("give failed job IDs or --all, not both and not neither")
    if queue and not retry_all:
        raise click.UsageError("--queue goes with --all")
    from antrian.runtime.broker import make_broker

    program = "antrian jobs retry"
    settings = settings_or_exit(program)
    engine, broker = db.engine_for(settings), make_broker(settings)
    try:
        if retry_all:
            count = or_exit(program, lambda: failed_jobs.retry(engine, broker, settings.broker_url, queue=queue,
                                                                 by=command_actor(), batch_size=batch_size))
            click.echo(f"retried {plural(count, 'failed job')}")
            return
        for job_id in job_ids:
            or_exit(program, partial(failed_jobs.retry, engine, broker, settings.broker_url, job_id=job_id,
                                      by=command_actor()))
            click.echo(f"retried failed job {job_id}")
    finally:
        broker.close()


@jobs.command("forget")
@click.argument("job_ids", nargs=-1, required=True, type=click.IntRange(min=1))
def forget(job_ids: tuple[int, ...]) -> None:
    """Delete failed jobs for good, one by one (by ID)."""
    program = "antrian jobs forget"
    settings = settings_or_exit(program, broker=False)
    engine = db.engine_for(settings)
    for job_id in job_ids:
        or_exit(program, partial(failed_jobs.remove, engine, job_id, by=command_actor()))
        click.echo(f"forgot failed job {job_id}")


@jobs.command("flush")
@_queue_option("Only this queue's failed jobs.")
@click.option("--older-than", "older_than", metavar="AGE", help="Only jobs failed longer ago than AGE (7d, 12h, 30m).")
def flush(queue: str | None, older_than: str | None) -> None:
    """Delete failed jobs for good."""
    try:
        age = failed_jobs.parse_age(older_than) if older_than is not None else None
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    settings = settings_or_exit("antrian jobs flush", broker=False)
    engine = db.engine_for(settings)
    count = guarded("antrian jobs flush",
                    lambda: failed_jobs.flush(engine, queue=queue, older_than=age, by=command_actor()))
    click.echo(f"flushed {plural(count, 'failed job')}")


@click.group(invoke_without_command=True)
@click.option("--watch", type=click.FloatRange(min=0.5), metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")
@click.pass_context
def queues(context: click.Context, watch: float | None) -> None:
    """Each queue's ready, unacknowledged, delayed and failed messages, its consumers, rates and waits; or pause
    and resume one.

    WAIT-P50 and WAIT-P95: the median and 95th percentile of how long the messages that started in the last
    5 minutes waited for a worker (``-`` when none did). STATE: ``paused`` while an operator has paused it.
    """
    if context.invoked_subcommand is not None:
        return
    from antrian.jobs import queue_stats
    settings = settings_or_exit("antrian queues", broker=False)
    engine = db.engine_for(settings)

    def show() -> None:
        stats = guarded("antrian queues", lambda: queue_stats.collect(settings, engine))
        rows = [(s.name, _n(s.ready), _n(s.unacknowledged), _n(s.delayed), str(s.dead_lettered), _n(s.consumers),
                 _n(s.publish_rate), _n(s.ack_rate), _wait(s.wait_p50_seconds), _wait(s.wait_p95_seconds),
                 "paused" if s.paused else "running")
                for s in stats]
        table(("QUEUE", "READY", "UNACKED", "DELAYED", "FAILED", "CONSUMERS", "IN/S", "OUT/S", "WAIT-P50",
                "WAIT-P95", "STATE"), rows)
        if stats and stats[0].source == "amqp":
            click.echo("(RabbitMQ's management API is unreachable: no unacknowledged counts, delays or rates)")

    if watch is None:
        show()
        return
    try:
        while True:
            click.clear()
            click.echo(time.strftime("%H:%M:%S") + f"  every {watch:g}s, Ctrl-C stops")
            show()
            time.sleep(watch)
    except KeyboardInterrupt:
        pass


@queues.command("pause")
@click.argument("queue", type=click.Choice(SPEC_QUEUES), metavar="QUEUE")
def queues_pause(queue: str) -> None:
    """Stop every worker on every host from taking QUEUE's messages (within seconds); they stay queued."""
    settings = settings_or_exit("antrian queues pause", broker=False)
    engine = db.engine_for(settings)
    pause = guarded("antrian queues pause", lambda: pauses.pause(engine, queue, by=command_actor()))
    click.echo(f"{queue} paused since {pause.paused_at:%Y-%m-%d %H:%M:%S %Z} (by {pause.paused_by}); "
               f"workers stop taking its messages within {POLL_INTERVAL_S:g}s; `antrian queues resume {queue}` "
               "lets them go on")


@queues.command("resume")
@click.argument("queue", type=click.Choice(SPEC_QUEUES), metavar="QUEUE")
def queues_resume(queue: str) -> None:
    """Let the workers take QUEUE's messages again."""
    settings = settings_or_exit("antrian queues resume", broker=False)
    engine = db.engine_for(settings)
    resumed = guarded("antrian queues resume", lambda: pauses.resume(engine, queue, by=command_actor()))
    click.echo(f"{queue} resumed" if resumed else f"{queue} was not paused")


@queues.command("migrate")
@click.option("--dry-run", is_flag=True, help="Only say what each queue is and what would be moved.")
def queues_migrate(dry_run: bool) -> None:
    """Move every queue (with its .DQ and .XQ) to QUEUE_TYPE and QUEUE_DELIVERY_LIMIT, keeping every message:
    ready, delayed and failed.

    Stop sync-api and every worker first (a queue that has consumers is refused, nothing changed). Safe to run
    again: a run that stopped midway (a crash, Ctrl-C) is finished by the next one.
    """
    program = "antrian queues migrate"
    settings = settings_or_exit(program, database=False, broker=False)
    or_exit(program, lambda: _migrate(settings, dry_run=dry_run))


def _migrate(settings: Settings, *, dry_run: bool) -> None:
    where = amqp.redact(settings.broker_url)
    try:
        connection = pika.BlockingConnection(amqp.connection_parameters(settings.broker_url))
    except pika.exceptions.AMQPError as exc:
        raise DependencyUnavailable(f"cannot reach the broker at {where}: {exc!r}") from None
    bars: dict[str, Any] = {}

    def progress(state: migrate.QueueState) -> migrate.Progress:
        """A progress bar on a terminal (out to the holding queue, then back), one line otherwise."""
        label = f"{state.name}: moving {state.to_move} messages"
        if state.to_move < migrate.BATCH or not sys.stderr.isatty():
            if state.to_move >= migrate.BATCH:
                click.echo(label + "…", err=True)
            return lambda moved: None
        bars[state.name] = bar = click.progressbar(
            length=2 * state.messages * (not state.matches) + (state.holding or 0), file=sys.stderr, label=label)
        bar.__enter__()
        return bar.update

    try:
        states = migrate.inspect(connection, QUEUES, queue_type=settings.queue_type,
                                 delivery_limit=settings.queue_delivery_limit)
        if dry_run:
            for state in states:
                click.echo(_planned(state))
            return
        moved = 0
        for done in migrate.migrate(connection, states, progress=progress):
            if done.state.name in bars:
                bars.pop(done.state.name).__exit__(None, None, None)
            click.echo(_done(done))
            moved += done.moved
        click.echo(f"every queue is {settings.queue_type}; {plural(moved, 'message')} moved")
    except pika.exceptions.AMQPError as exc:
        raise DependencyUnavailable(
            f"stopped at {where}: {exc!r}; no message is lost: run `antrian queues migrate` again to finish"
        ) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; no message is lost: run `antrian queues migrate` again to "
                                   "finish") from None
    finally:
        if connection.is_open:
            connection.close()


def _was(state: migrate.QueueState) -> str:
    if state.holding is not None:
        return f"{state.current} (an interrupted migration, {plural(state.holding, 'message')} held in "\
               f"{migrate.holding_name(state.name)})"
    return state.current


def _planned(state: migrate.QueueState) -> str:
    if not state.must_move:
        return f"{state.name}: already {state.target}"
    if state.current == migrate.MISSING and state.holding is None:
        return f"{state.name}: missing, would be created as {state.target}"
    in_use = f"; {plural(state.consumers, 'consumer')}: stop them first" if state.consumers else ""
    return f"{state.name}: {_was(state)} -> {state.target}, {plural(state.to_move, 'message')} to move{in_use}"


def _done(done: migrate.Moved) -> str:
    state = done.state
    if not state.must_move:
        return f"{state.name}: already {state.target}"
    if done.created:
        return f"{state.name}: created as {state.target}"
    return f"{state.name}: {_was(state)} -> {state.target}, {plural(done.moved, 'message')} moved"





def _args(args: list[Any]) -> str:
    return ", ".join(json.dumps(arg) for arg in args)


def _clip(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= EXCEPTION_WIDTH else line[: EXCEPTION_WIDTH - 1] + "…"


def _n(value: int | float | None) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _wait(seconds: float | None) -> str:
    """A wait as ``850ms``, ``12.5s`` or ``3.2m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"
