"""Operators' named tokens: created with a role (the secret shown once, only its hash kept), found by their secret,
listed, and revoked (which ends the admin sessions they opened at once)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from antrian.access import audit
from antrian.access.audit import Actor
from antrian.access.roles import ROLES
from antrian.db.models import AdminSession, OperatorToken
from antrian.errors import Conflict, InvalidInput, NotFound

#: The bootstrap admin's name in the audit trail: whoever holds ``API_TOKEN``.
BOOTSTRAP = "API_TOKEN"
#: What every operator token starts with, so a leaked one is recognised (by secret scanners too).
SECRET_PREFIX = "antrian_"
#: Characters of a secret kept in clear to recognise it in a list: the prefix and 6 random ones.
SHOWN = len(SECRET_PREFIX) + 6
#: A token's name: lower-case, a letter or digit first, up to 64 characters.
NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
#: ``last_used_at`` is written at most this often per token, not on every request.
LAST_USE_RESOLUTION_S = 60


class TokenNotFound(NotFound):
    """Raised when a token is named that does not exist (or is already revoked)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no live token is named {name!r}")


class TokenNameTaken(Conflict):
    """Raised when a token is created with the name of a live one."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a live token is already named {name!r}: revoke it first or choose another name")


@dataclass(frozen=True)
class Operator:
    """Someone who presented a valid token: its name and role, and the hash that identifies the token."""

    name: str
    role: str
    token_hash: str


def digest(secret: str) -> str:
    """The SHA-256 (hex) a token is kept as. Secrets are 256 random bits: a slow hash would add nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def bootstrap(api_token: str | None, candidate: str) -> Operator | None:
    """The bootstrap admin when ``candidate`` is ``API_TOKEN`` (compared in constant time)."""
    if api_token and hmac.compare_digest(candidate.encode(), api_token.encode()):
        return Operator(BOOTSTRAP, "admin", digest(api_token))
    return None


def create(engine: Engine, name: str, role: str, *, by: Actor) -> str:
    """Create a live token named ``name`` with ``role``; return its secret (shown once, never stored)."""
    if not NAME.fullmatch(name):
        raise InvalidInput("name must be 1 to 64 characters of a-z, 0-9, '.', '_', '@' or '-', "
                           "starting with a letter or digit")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    try:
        with engine.begin() as connection:
            connection.execute(insert(OperatorToken).values(
                name=name, role=role, token_hash=digest(secret), prefix=secret[:SHOWN], created_by=by.operator
            ))
            audit.record(connection, by, "token-create", f"token:{name}", role=role)
    except IntegrityError as exc:
        if "operator_tokens_live_name" in str(exc.orig):
            raise TokenNameTaken(name) from None
        raise
    return secret


def identify(engine: Engine, secret: str) -> Operator | None:
    """The live token whose secret this is, or None; notes its use (at most once a minute)."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    token_hash = digest(secret)
    with engine.connect() as connection:
        row = connection.execute(
            select(OperatorToken.name, OperatorToken.role,
                   OperatorToken.last_used_at.is_(None) | (OperatorToken.last_used_at < _stale()))
            .where(OperatorToken.token_hash == token_hash, OperatorToken.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            return None
        name, role, stale = row
        if stale:
            connection.execute(update(OperatorToken).where(OperatorToken.token_hash == token_hash)
                               .values(last_used_at=func.now()))
            connection.commit()
    return Operator(name, role, token_hash)


def list_tokens(engine: Engine, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Every live token (and the revoked ones when asked), oldest first, without secrets."""
    query = select(OperatorToken.__table__).order_by(OperatorToken.id)
    if not include_revoked:
        query = query.where(OperatorToken.revoked_at.is_(None))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        {"name": row.name, "role": row.role, "prefix": row.prefix, "created_at": _iso(row.created_at),
         "created_by": row.created_by, "last_used_at": _iso(row.last_used_at), "revoked_at": _iso(row.revoked_at),
         "revoked_by": row.revoked_by}
        for row in rows
    ]


def revoke(engine: Engine, name: str, *, by: Actor) -> None:
    """Revoke the live token ``name`` and end every admin session it opened; raises :class:`TokenNotFound`."""
    with engine.begin() as connection:
        token_hash = connection.execute(
            update(OperatorToken).where(OperatorToken.name == name, OperatorToken.revoked_at.is_(None))
            .values(revoked_at=func.now(), revoked_by=by.operator).returning(OperatorToken.token_hash)
        ).scalar_one_or_none()
        if token_hash is None:
            raise TokenNotFound(name)
        ended = connection.execute(
            update(AdminSession).where(AdminSession.token_hash == token_hash, AdminSession.ended_at.is_(None))
            .values(ended_at=func.now()).returning(AdminSession.id_hash)
        ).all()
        audit.record(connection, by, "token-revoke", f"token:{name}", sessions_ended=len(ended))


def _stale() -> Any:
    return func.now() - text(f"interval '{LAST_USE_RESOLUTION_S} seconds'")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
