"""``antrian sync list|cancel ID|resume ID``: the sync runs so far, and a stalled run ended or finished."""

from __future__ import annotations

import json
from typing import Any

import click

from antrian.access.audit import command_actor
from antrian.cli.output import moment, or_exit, table
from antrian.db import engine as db
from antrian.runtime.startup import guarded, settings_or_exit
from antrian.sync import runs as sync_runs


@click.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, as GET /api/sync-runs/ID answers.")
def sync_list(limit: int, as_json: bool) -> None:
    """List sync runs, newest first, with their counts."""
    program = "antrian sync list"
    settings = settings_or_exit(program, broker=False)
    engine = db.engine_for(settings)
    items, total = guarded(program, lambda: sync_runs.list_runs(engine, limit=limit, offset=0))
    if as_json:
        for item in items:
            click.echo(json.dumps(item))
        return
    if not items:
        click.echo("no sync runs")
        return
    rows = [(str(r["id"]), r["status"], f"{r['processed']}/{r['total']}", str(r["failed"]), f"{r['percent']:.2f}%",
             moment(r["started_at"]), moment(r["finished_at"])) for r in items]
    table(("ID", "STATUS", "PROCESSED", "FAILED", "PERCENT", "STARTED (UTC)", "ENDED (UTC)"), rows)
    shown = f"{len(items)} of {total}" if total > len(items) else str(total)
    click.echo(f"{shown} sync run{'s' if total != 1 else ''}")


@click.command("cancel")
@click.argument("run_id", type=click.IntRange(min=1))
def sync_cancel(run_id: int) -> None:
    """Cancel a running sync run: its remaining jobs end without calling the school API, and a new run may start."""
    program = "antrian sync cancel"
    settings = settings_or_exit(program, broker=False)
    engine = db.engine_for(settings)
    run = or_exit(program, lambda: sync_runs.cancel_run(engine, run_id, by=command_actor()))
    click.echo(f"sync run {run['id']} cancelled: {run['processed']} of {run['total']} students processed, "
               f"{run['failed']} failed")


@click.command("resume")
@click.argument("run_id", type=click.IntRange(min=1))
def sync_resume(run_id: int) -> None:
    """Send again the jobs of the students still pending in a stalled running run."""
    from antrian.runtime.broker import make_broker

    program = "antrian sync resume"
    settings = settings_or_exit(program)
    engine, broker = db.engine_for(settings), make_broker(settings)
    try:
        resumed: dict[str, Any] = or_exit(
            program, lambda: sync_runs.resume_run(engine, broker, run_id, by=command_actor())
        )
    finally:
        broker.close()
    click.echo(f"sync run {resumed['id']} resumed: {resumed['pending']} pending students sent again")
