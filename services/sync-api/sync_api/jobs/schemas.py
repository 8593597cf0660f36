"""The queries, bodies and answers of ``/api/jobs/failed`` and ``/api/queues`` (validation and the document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from antrian.jobs.queue_stats import SPEC_QUEUES
from sync_api.web.schemas import Page, PageQuery, Query

QueueName = Literal["sync-pembayaran", "emails", "booking-expiry"]
assert set(QueueName.__args__) == set(SPEC_QUEUES), "the document names SPEC's queues"  # type: ignore[attr-defined]


class OfQueue(Query):
    queue: QueueName | None = Field(None, description="only this queue's failed jobs (default: every queue)")


class FailedJobsQuery(PageQuery, OfQueue):
    pass


class FlushQuery(OfQueue):
    older_than: str | None = Field(
        None, json_schema_extra={"pattern": r"^[0-9]{1,5}[dhmsDHMS]?$"},  # checked by failed_jobs.parse_age
        description="only jobs that failed longer ago than this, e.g. `30m`, `12h`, `7d` (a bare number is days)",
    )


class QueueChoice(BaseModel):
    """The body's ``queue``, as an alternative to ``?queue=`` (both given must agree)."""

    model_config = ConfigDict(extra="forbid")

    queue: QueueName | None = None


class FailedJob(BaseModel):
    id: int
    message_id: str
    queue: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: int
    exception: str | None
    traceback: str | None
    worker: str | None
    enqueued_at: str | None
    failed_at: str | None


class FailedJobs(Page[FailedJob]):
    pass


class Retried(BaseModel):
    retried: int = Field(description="jobs put back on their queues")
    id: int | None = None
    queue: str | None = None


class Flushed(BaseModel):
    flushed: int
    queue: str | None
    older_than: str | None


class QueueState(BaseModel):
    """One queue with its delay (``.DQ``) and dead-letter (``.XQ``) queues folded in."""

    name: str
    ready: int | None
    unacknowledged: int | None
    delayed: int | None
    dead_lettered: int
    consumers: int | None
    publish_rate: float | None
    ack_rate: float | None
    source: str = Field(description="`management` or `amqp` (no rates, no unacknowledged count)")


class Queues(Page[QueueState]):
    pass
