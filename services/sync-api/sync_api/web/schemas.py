"""Models every blueprint shares: the error body, a page of a list, and the health answers."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sync_api.web.validation import MAX_ID, WholeNumber

#: ``?limit=`` and ``?offset=`` (SPEC: default 100, at most 1000).
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
Item = TypeVar("Item")


class Query(BaseModel):
    """A query string: its parameters are strings on the wire, so whole numbers are parsed from them."""

    model_config = ConfigDict(extra="ignore")


class PageQuery(Query):
    """``?limit=`` and ``?offset=`` for every list route."""

    limit: Annotated[int, WholeNumber(1, MAX_LIMIT, in_query=True)] = Field(
        DEFAULT_LIMIT, description="at most this many items"
    )
    offset: Annotated[int, WholeNumber(0, MAX_ID, in_query=True)] = Field(0, description="skip this many items first")


class ErrorBody(BaseModel):
    """Every error: one sentence that says what is wrong (some errors add fields, e.g. the running run's id)."""

    model_config = ConfigDict(extra="allow")

    error: str


class Page(BaseModel, Generic[Item]):
    """A list route's answer: one page of items and how many there are in all."""

    items: list[Item]
    total: int


class Health(BaseModel):
    status: str = Field(description="``ok``")


class Readiness(BaseModel):
    """Whether the database and the broker are reachable; 503 naming only which is not (the reason goes to the
    log: this answers anyone, so it carries no host, user or error text)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description="``ok`` or ``unavailable``")
    database: str | None = Field(default=None, description="``ok`` or ``unreachable``")
    broker: str | None = Field(default=None, description="``ok`` or ``unreachable``")
    error: str | None = Field(default=None, description="on a 503: which is unreachable (``database``, ``broker``, "
                                                         "or both), nothing more")
