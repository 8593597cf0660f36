"""The audit trail: every state-changing action with the operator's name, written in the action's own transaction
(so an action is never done without its record, nor recorded without being done)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from antrian.db.models import AuditEvent

#: Where an action can come from: the API, the admin pages, a command, or antrian's own schedule.
VIAS = ("api", "admin", "cli", "schedule")


@dataclass(frozen=True)
class Actor:
    """Who does an action: the operator's name (a token's name) and where from (one of :data:`VIAS`)."""

    operator: str
    via: str


def command_actor() -> Actor:
    """The person running an ``antrian`` command: whoever can reach the database as the operating-system user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        user = "unknown"
    return Actor(f"cli:{user}", "cli")


def record(connection: Connection, by: Actor, action: str, target: str, **detail: Any) -> None:
    """Add one event to the audit trail, in ``connection``'s transaction."""
    connection.execute(
        insert(AuditEvent).values(operator=by.operator, via=by.via, action=action, target=target, detail=detail)
    )


def list_events(engine: Engine, *, limit: int, offset: int = 0, operator: str | None = None,
                action: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Events newest first (optionally one operator's or one action's), and how many there are."""
    query = select(AuditEvent.__table__)
    if operator is not None:
        query = query.where(AuditEvent.operator == operator)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = connection.execute(query.order_by(AuditEvent.id.desc()).limit(limit).offset(offset)).all()
    return [_present(row) for row in rows], total


def _present(event: Any) -> dict[str, Any]:
    return {"id": event.id, "at": event.at.isoformat(), "operator": event.operator, "via": event.via,
            "action": event.action, "target": event.target, "detail": event.detail}
