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
    q: str | None = Field(
        None, max_length=200,
        description="only jobs whose arguments (as JSON) or exception contain this, ignoring case, e.g. a booking id",
    )


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


class Forgotten(BaseModel):
    deleted: int = Field(description="1: the failed job is gone for good")
    id: int


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
    wait_p50_seconds: float | None = Field(
        description="median wait (seconds from enqueue, or a delayed message's due time, to the start of processing)"
                    " of the messages that started in the last 5 minutes, estimated from histogram buckets;"
                    " null when none did"
    )
    wait_p95_seconds: float | None = Field(description="95th percentile of the same waits; null when none")
    wait_messages: int = Field(description="messages that started processing in the last 5 minutes")
    paused: bool = Field(description="an operator paused the queue: no worker takes its messages")
    paused_at: str | None = Field(description="when it was paused (ISO 8601); null while it runs")
    paused_by: str | None = Field(description="who paused it (an operator's name, or `cli:USER`); null while it runs")


class Queues(Page[QueueState]):
    pass


class QueuePause(BaseModel):
    """A queue's pause after ``pause`` or ``resume``."""

    name: str
    paused: bool
    paused_at: str | None
    paused_by: str | None
