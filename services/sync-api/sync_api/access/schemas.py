"""The bodies and answers of ``/api/tokens`` and ``/api/audit``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sync_api.web.schemas import Page, PageQuery, Query


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._@-]*$",
                      description="who holds it, e.g. `alice` (unique among live tokens)")
    role: Literal["viewer", "operator", "admin"]


class TokenCreated(BaseModel):
    name: str
    role: str
    token: str = Field(description="the secret, shown this once: only its hash is kept")


class Token(BaseModel):
    name: str
    role: str
    prefix: str = Field(description="the secret's first characters, to recognise it")
    created_at: str
    created_by: str
    last_used_at: str | None = Field(description="updated at most once a minute")
    revoked_at: str | None
    revoked_by: str | None


class TokensQuery(Query):
    all: bool = Field(False, description="revoked tokens too")


class Tokens(Page[Token]):
    pass


class TokenRevoked(BaseModel):
    revoked: str
    sessions_ended: bool = Field(description="its admin sessions ended with it")


class AuditQuery(PageQuery):
    operator: str | None = Field(None, max_length=100, description="only this operator's actions")
    action: str | None = Field(None, max_length=40, description="only this action, e.g. `flush`")


class AuditEvent(BaseModel):
    id: int
    at: str
    operator: str = Field(description="the token's name (`API_TOKEN` for the bootstrap token), or `cli:USER`")
    via: str = Field(description="`api`, `admin` (the pages) or `cli`")
    action: str = Field(description="e.g. `retry`, `flush`, `forget`, `cancel`, `resume`, `pause`, `resend`, "
                                    "`start`, `token-create`, `token-revoke`, `login`, `logout`")
    target: str = Field(description="what it acted on, e.g. `queue:emails`, `failed-job:12`, `sync-run:3`")
    detail: dict[str, Any]


class AuditEvents(Page[AuditEvent]):
    pass
