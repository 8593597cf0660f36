"""Admin sessions kept in PostgreSQL: the cookie holds only a random id, so logging out, revoking the token the
session was opened with, or changing ``API_TOKEN`` ends it at once, wherever a copy of the cookie is."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import Engine, delete, func, insert, or_, select, update

from antrian.access import audit
from antrian.access.audit import Actor
from antrian.access.tokens import BOOTSTRAP, Operator, digest
from antrian.db.models import AdminSession, OperatorToken

#: A session ends this long after sign-in, however busy.
LIFETIME = timedelta(hours=12)
#: The cookie's name.
COOKIE = "antrian_session"


def open_session(engine: Engine, operator: Operator, *, address: str) -> str:
    """A new session for ``operator`` (its sign-in audited); returns the cookie's value (a secret only the browser
    keeps)."""
    session_id = secrets.token_urlsafe(32)
    with engine.begin() as connection:
        # Sessions a day past their end are of no use, even to the audit trail (which records sign-ins): dropped here.
        connection.execute(delete(AdminSession).where(AdminSession.expires_at < func.now() - timedelta(days=1)))
        connection.execute(insert(AdminSession).values(
            id_hash=digest(session_id), token_hash=operator.token_hash, operator=operator.name, address=address,
            expires_at=func.now() + LIFETIME,
        ))
        audit.record(connection, Actor(operator.name, "admin"), "login", f"session:{operator.name}", address=address)
    return session_id


def find(engine: Engine, session_id: str, *, api_token: str) -> Operator | None:
    """The operator of a live session: not ended, not expired, and its token still live (or still ``API_TOKEN``)."""
    bootstrap_hash = digest(api_token)
    with engine.connect() as connection:
        row = connection.execute(
            select(AdminSession.operator, AdminSession.token_hash, OperatorToken.role)
            .outerjoin(OperatorToken, (OperatorToken.token_hash == AdminSession.token_hash)
                       & OperatorToken.revoked_at.is_(None))
            .where(AdminSession.id_hash == digest(session_id), AdminSession.ended_at.is_(None),
                   AdminSession.expires_at > func.now(),
                   or_(OperatorToken.id.is_not(None), AdminSession.token_hash == bootstrap_hash))
        ).one_or_none()
    if row is None:
        return None
    if row.token_hash == bootstrap_hash:
        return Operator(BOOTSTRAP, "admin", bootstrap_hash)
    return Operator(row.operator, row.role, row.token_hash)


def end(engine: Engine, session_id: str) -> None:
    """End a session (logout, audited); a session already ended or unknown stays so."""
    with engine.begin() as connection:
        operator = connection.execute(
            update(AdminSession).where(AdminSession.id_hash == digest(session_id), AdminSession.ended_at.is_(None))
            .values(ended_at=func.now()).returning(AdminSession.operator)
        ).scalar_one_or_none()
        if operator is not None:
            audit.record(connection, Actor(operator, "admin"), "logout", f"session:{operator}")
