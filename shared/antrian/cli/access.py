"""``antrian tokens create|list|revoke`` and ``antrian audit``: who may do what, and who did what.

Whoever can run these reaches the database directly, so they act as ``cli:<user>`` with every right; what they do
is audited under that name like an operator's action through the API.
"""

from __future__ import annotations

import json

import click

from antrian.access import audit, tokens
from antrian.access.audit import command_actor
from antrian.access.roles import ROLES
from antrian.cli.output import moment, or_exit, table
from antrian.db import engine as db
from antrian.runtime.startup import settings_or_exit


@click.group("tokens")
def tokens_group() -> None:
    """Operators' named tokens (roles: viewer, operator, admin)."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="viewer: read; operator: also retry, flush, cancel, resume, pause, resend; admin: also tokens.")
def create(name: str, role: str) -> None:
    """Create a token for NAME; its secret is printed once, alone on the last line (only its hash is kept)."""
    program = "antrian tokens create"
    engine = db.engine_for(settings_or_exit(program, broker=False))
    secret = or_exit(program, lambda: tokens.create(engine, name, role, by=command_actor()))
    click.echo(f"created token {name!r} ({role}); keep its secret now, it is not shown again:", err=True)
    click.echo(secret)


@tokens_group.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Revoked tokens too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, as GET /api/tokens answers.")
def list_(include_revoked: bool, as_json: bool) -> None:
    """Tokens with their role, when they were last used, and who made them (never their secrets)."""
    program = "antrian tokens list"
    engine = db.engine_for(settings_or_exit(program, broker=False))
    items = or_exit(program, lambda: tokens.list_tokens(engine, include_revoked=include_revoked))
    if as_json:
        click.echo(json.dumps({"items": items, "total": len(items)}))
        return
    if not items:
        click.echo("no tokens yet: antrian tokens create NAME --role viewer|operator|admin")
        return
    table(("NAME", "ROLE", "PREFIX", "CREATED", "BY", "LAST USED", "REVOKED"),
          [(t["name"], t["role"], t["prefix"] + "…", moment(t["created_at"]), t["created_by"],
            moment(t["last_used_at"]), moment(t["revoked_at"])) for t in items])


@tokens_group.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke NAME's token: it and every admin session it opened stop working at once."""
    program = "antrian tokens revoke"
    engine = db.engine_for(settings_or_exit(program, broker=False))
    or_exit(program, lambda: tokens.revoke(engine, name, by=command_actor()))
    click.echo(f"revoked token {name!r}; its sessions are ended")


@click.command("audit")
@click.option("--operator", help="Only this operator's actions (a token's name, or cli:USER).")
@click.option("--action", help="Only this action, e.g. flush, retry, pause, resend, token-revoke.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, as GET /api/audit answers.")
def audit_command(operator: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """Who did what, newest first."""
    program = "antrian audit"
    engine = db.engine_for(settings_or_exit(program, broker=False))
    items, total = or_exit(program, lambda: audit.list_events(engine, limit=limit, operator=operator, action=action))
    if as_json:
        click.echo(json.dumps({"items": items, "total": total}))
        return
    if not items:
        click.echo("nothing audited yet" if operator is None and action is None else "no such actions")
        return
    table(("AT", "OPERATOR", "VIA", "ACTION", "TARGET", "DETAIL"),
          [(moment(e["at"]), e["operator"], e["via"], e["action"], e["target"],
            " ".join(f"{k}={v}" for k, v in e["detail"].items())) for e in items])
    if total > len(items):
        click.echo(f"… {total - len(items)} older (--limit)")
