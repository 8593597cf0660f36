"""The ``antrian`` command: migrations, demo data and sync runs from the terminal."""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from antrian.access.audit import command_actor
from antrian.cli import demo
from antrian.cli.access import audit_command, tokens_group
from antrian.cli.bookings import bookings
from antrian.cli.jobs import jobs, queues
from antrian.cli.runs import sync_cancel, sync_list, sync_resume
from antrian.config import Settings
from antrian.db import engine as db
from antrian.db import migrate as schema
from antrian.errors import DependencyUnavailable, RunAlreadyRunning
from antrian.runtime.startup import guarded, settings_or_exit
from antrian.sync import runs as sync_runs

#: Seconds between two looks at a run's progress while ``--wait``ing.
POLL_INTERVAL_S = 0.5


@click.group()
def main() -> None:
    """antrian: background jobs on RabbitMQ and PostgreSQL."""


main.add_command(jobs)
main.add_command(queues)
main.add_command(bookings)
main.add_command(tokens_group)
main.add_command(audit_command)


@main.command()
def migrate() -> None:
    """Create the database if it is missing and apply every migration."""
    settings = settings_or_exit("antrian migrate", database=False, broker=False)

    def work() -> None:
        try:
            if schema.create_database_if_missing(settings.database_url):
                click.echo(f"created database {db.redact(settings.database_url)}")
        except OperationalError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise DependencyUnavailable(
                f"cannot reach the database at {db.redact(settings.database_url)}: {reason}"
            ) from None
        schema.upgrade(settings.database_url)

    guarded("antrian migrate", work)
    click.echo("migrations applied")


@main.command("seed-demo")
@click.option("--students", "students", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--tours", "tours", type=click.IntRange(0, 10_000), default=5, show_default=True)
@click.option("--if-empty", is_flag=True, help="Add students only when there are none, and tours likewise.")
def seed_demo(students: int, tours: int, if_empty: bool) -> None:
    """Insert demo students and tours for development."""
    settings = settings_or_exit("antrian seed-demo", broker=False)
    engine = db.engine_for(settings)
    if if_empty and demo.has_students(engine):
        click.echo("students exist already; no demo students added")
    else:
        click.echo(f"added {demo.seed_students(engine, students)} demo students")
    if if_empty and demo.has_tours(engine):
        click.echo("tours exist already; no demo tours added")
    else:
        click.echo(f"added {demo.seed_tours(engine, tours)} demo tours")


@main.group()
def sync() -> None:
    """Student payment sync runs."""


sync.add_command(sync_list)
sync.add_command(sync_cancel)
sync.add_command(sync_resume)


@sync.command("start")
@click.option("--wait", is_flag=True, help="Show a progress bar until the run finishes.")
def sync_start(wait: bool) -> None:
    """Start a sync of every student's pembayaran."""
    from antrian.runtime.broker import make_broker

    settings = settings_or_exit("antrian sync start")
    engine = db.engine_for(settings)
    broker = make_broker(settings)
    try:
        run = sync_runs.start_run(engine, broker, by=command_actor())
    except RunAlreadyRunning as exc:
        raise click.ClickException(f"sync run {exc.run_id} is still running") from None
    finally:
        broker.close()
    click.echo(f"sync run {run['id']} started for {run['total']} students")
    if wait:
        run = _follow(engine, run["id"])
        click.echo(json.dumps(run))


def _follow(engine: Engine, run_id: int) -> dict[str, Any]:
    """Draw a progress bar until the run finishes; return its final state."""
    from tqdm import tqdm

    run = _started_run(engine, run_id)
    with tqdm(total=run["total"], unit="student", desc=f"sync run {run_id}", dynamic_ncols=True) as bar:
        while True:
            bar.total = run["total"]
            bar.set_postfix(failed=run["failed"], refresh=False)
            bar.update(run["processed"] - bar.n)
            if not run["isRunning"]:
                return run
            time.sleep(POLL_INTERVAL_S)
            run = _started_run(engine, run_id)


def _started_run(engine: Engine, run_id: int) -> dict[str, Any]:
    """The run ``sync start`` made. Nothing deletes runs; one deleted by hand meanwhile fails as it always did."""
    run = sync_runs.get_run(engine, run_id)
    if run is None:  # a TypeError, like the subscript of None it replaces
        raise TypeError(f"sync run {run_id} is gone: it was deleted while being followed")
    return run


@main.group()
def schedule() -> None:
    """Scheduled tasks (Laravel's schedule:list, schedule:run and schedule:work)."""


def _scheduled(*, broker: bool) -> tuple[Settings, Engine, ModuleType]:
    from antrian import schedule as scheduling

    # ``booking-expiry-scheduler`` runs ``schedule work`` under its own name: errors say which program failed.
    root = click.get_current_context().find_root().info_name
    # (info_name is None only for a context built by hand: then the program is called "None", as it always was.)
    settings = settings_or_exit("antrian schedule" if root == "antrian" else str(root), broker=broker)
    return settings, db.engine_for(settings), scheduling


@schedule.command("list")
def schedule_list() -> None:
    """Show each scheduled task, when it was last enqueued and when it is next due."""
    settings, engine, scheduling = _scheduled(broker=False)
    rows = guarded("antrian schedule list", lambda: scheduling.status(engine, scheduling.tasks(settings)))
    for row in rows:
        task = row.task
        last = row.last_enqueued_at.isoformat(timespec="seconds") if row.last_enqueued_at else "never"
        wait = max((row.next_due_at - row.now).total_seconds(), 0)
        due = "now" if wait == 0 else f"in {_duration(wait)} ({row.next_due_at.isoformat(timespec='seconds')})"
        click.echo(f"every {_duration(task.every_seconds):<8} {task.name:<24} "
                   f"{task.contract.queue}: {task.contract.actor}()  last enqueued {last}  next due {due}")
        click.echo(f"{'':15}{task.description}")


@schedule.command("run")
def schedule_run() -> None:
    """Enqueue every task that is due now (once per period, whoever else runs this)."""
    from antrian.runtime.broker import make_broker

    settings, engine, scheduling = _scheduled(broker=True)
    broker = make_broker(settings)
    try:
        names = guarded("antrian schedule run", lambda: scheduling.run_due(engine, broker, scheduling.tasks(settings)))
    finally:
        broker.close()
    click.echo("\n".join(f"enqueued {name}" for name in names) if names else "nothing is due")


@schedule.command("work")
def schedule_work() -> None:
    """Run in the foreground, enqueueing each task when it is due (Ctrl-C or SIGTERM stops it)."""
    import signal
    import threading

    from antrian.logging import configure_logging
    from antrian.runtime.broker import make_broker

    settings, engine, scheduling = _scheduled(broker=True)
    configure_logging("scheduler", settings.log_level)
    broker = make_broker(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduled = scheduling.tasks(settings)
    click.echo(f"scheduler started: {', '.join(f'{t.name} every {_duration(t.every_seconds)}' for t in scheduled)}")
    try:
        scheduling.work(engine, broker, scheduled, stop)
    finally:
        broker.close()
    click.echo("scheduler stopped")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts) or "0s"
