"""``antrian bookings show|resend``: support finds a customer's booking and its emails, and resends one.

Both call what ``GET /api/bookings/<id>`` and ``POST /api/bookings/<id>/emails/<kind>/resend`` call
(:mod:`antrian.bookings.records`, :mod:`antrian.bookings.emails`): a resend is recorded with source ``cli`` and
queued through the outbox, which sync-api's relay publishes; the mailer sends it once.
"""

from __future__ import annotations

import json
from typing import Any

import click

from antrian.access.audit import command_actor
from antrian.bookings import emails, records
from antrian.cli.output import moment, or_exit, table
from antrian.db import engine as db
from antrian.runtime.startup import settings_or_exit


@click.group()
def bookings() -> None:
    """A customer's booking and its emails (invoice, e-ticket, cancellation)."""



@bookings.command("show")
@click.argument("code_or_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, as GET /api/bookings/ID answers.")
def show(code_or_id: str, as_json: bool) -> None:
    """Show a booking (by its code, e.g. K7QM-2XH9, or its id) and the emails it was sent."""
    program = "antrian bookings show"
    settings = settings_or_exit(program, broker=False)
    engine = db.engine_for(settings)

    def read() -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
        booking = records.find(engine, code_or_id)
        return booking, records.tour_name(engine, booking["tour_id"]), emails.history(engine, booking["id"])

    booking, tour, sent = or_exit(program, read)
    if as_json:
        click.echo(json.dumps({**booking, "emails": sent}))
        return
    deadline = f", pay by {moment(booking['expires_at'])} UTC" if booking["status"] == "pending" else ""
    paid = f", paid {moment(booking['paid_at'])} UTC" if booking["paid_at"] else ""
    for label, value in [
        ("booking", f"{booking['code']} (id {booking['id']})"),
        ("status", f"{booking['status']}{deadline}{paid}"),
        ("customer", f"{booking['customer_name']} <{booking['customer_email']}>"),
        ("tour", f"{booking['tour_id']} {tour or '(gone)'}"),
        ("quantity", str(booking["quantity"])),
        ("amount", booking["total_amount"]),
        ("booked at", f"{moment(booking['created_at'])} UTC"),
    ]:
        click.echo(f"{label + ':':<10} {value}")
    click.echo("")
    if not sent:
        click.echo("no emails yet")
        return
    rows = [(e["kind"], e["status"], moment(e["sent_at"]), e["message_id"] or "-", _resend(e)) for e in sent]
    table(("KIND", "STATUS", "SENT AT (UTC)", "MESSAGE-ID", "RESEND"), rows)
    resends = sum(1 for e in sent if e["resend"])
    click.echo(f"{len(sent) - resends} email{'s' if len(sent) - resends != 1 else ''}, "
               f"{resends} resend{'s' if resends != 1 else ''}; "
               f"`antrian bookings resend {booking['code']} KIND` sends one again")


@bookings.command("resend")
@click.argument("code_or_id")
@click.argument("kind", metavar="KIND")
def resend(code_or_id: str, kind: str) -> None:
    """Send a booking's email once more: KIND is invoice, eticket or cancellation (source cli)."""
    program = "antrian bookings resend"
    if kind not in emails.KINDS:
        raise click.ClickException(f"unknown email kind {kind!r}: give {', '.join(emails.KINDS)}")
    settings = settings_or_exit(program, broker=False)
    engine = db.engine_for(settings)

    def queue() -> dict[str, Any]:
        booking = records.find(engine, code_or_id)
        return emails.resend(engine, booking["id"], kind, by=command_actor())

    queued = or_exit(program, queue)
    click.echo(f"resend {queued['resend_id']} queued: booking {queued['code']}'s {kind} email, "
               f"sent once more by the mailer")


def _resend(email: dict[str, Any]) -> str:
    if not email["resend"]:
        return "-"
    return f"#{email['resend_id']} by {email['source']} at {moment(email['requested_at'])}"
