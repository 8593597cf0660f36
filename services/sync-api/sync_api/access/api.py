"""``/api/tokens`` (admin: operators' tokens) and ``/api/audit`` (who did what, newest first)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from antrian.access import audit, tokens
from sync_api.access.schemas import AuditEvents, AuditQuery, NewToken, TokenCreated, TokenRevoked, Tokens, TokensQuery
from sync_api.web import auth
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import documented

bp = Blueprint("access", __name__, url_prefix="/api")


@bp.get("/tokens")
@auth.requires("admin")
@documented(tags=("access",), query=TokensQuery, ok={"HTTP_200": Tokens}, errors=(400,))
def list_tokens(query: TokensQuery):
    """Operators' tokens with their role and last use (never their secrets); admin only."""
    items = tokens.list_tokens(get_engine(), include_revoked=query.all)
    return jsonify({"items": items, "total": len(items)})


@bp.post("/tokens")
@auth.requires("admin")
@documented(tags=("access",), body=NewToken, ok={"HTTP_201": TokenCreated}, errors=(400, 409))
def create_token(json: NewToken):
    """Create an operator's token; its secret is in this answer only. Admin only."""
    secret = tokens.create(get_engine(), json.name, json.role, by=auth.actor())
    return jsonify({"name": json.name, "role": json.role, "token": secret}), 201


@bp.delete("/tokens/<name>")
@auth.requires("admin")
@documented(tags=("access",), ok={"HTTP_200": TokenRevoked}, errors=(404,))
def revoke_token(name: str):
    """Revoke a token: it and the admin sessions it opened stop working at once. Admin only."""
    tokens.revoke(get_engine(), name, by=auth.actor())
    return jsonify({"revoked": name, "sessions_ended": True})


@bp.get("/audit")
@auth.requires("viewer")
@documented(tags=("access",), query=AuditQuery, ok={"HTTP_200": AuditEvents}, errors=(400,))
def list_audit(query: AuditQuery):
    """Who did what, newest first: every state-changing action with the operator's name."""
    items, total = audit.list_events(get_engine(), limit=query.limit, offset=query.offset,
                                     operator=query.operator, action=query.action)
    return jsonify({"items": items, "total": total})
