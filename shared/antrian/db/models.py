"""SQLAlchemy 2.0 models of the tables other programs may read (SPEC's "Data")."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Student(Base):
    """A student (siswa). The school's own systems insert ``idperson`` and ``name`` with plain SQL."""

    __tablename__ = "students"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idperson: Mapped[int] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(Text, server_default="")
    pembayaran: Mapped[Any | None] = mapped_column(JSONB)
    pembayaran_synced_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class SyncRun(Base):
    """One sync of every student's pembayaran.

    ``total`` is the number of students when the run started until the fan-out has recorded
    its items, then the exact number of items. The run finishes when the processed count of
    its :class:`SyncRunCount` shards reaches it.
    """

    __tablename__ = "sync_runs"
    __table_args__ = (
        # At most one running run, whatever the number of web processes asking at once.
        Index("sync_runs_one_running", text("(true)"), unique=True, postgresql_where=text("status = 'running'")),
        # ``cancelled``: ended by an operator before every student had an outcome (migration 0009).
        CheckConstraint("status IN ('running', 'finished', 'cancelled')", name="sync_runs_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="running")
    total: Mapped[int] = mapped_column(Integer, server_default="0")
    #: Students with ``id`` up to this one belong to the run (the snapshot taken at start).
    last_student_id: Mapped[int] = mapped_column(BigInteger, server_default="0")
    #: The fan-out has recorded the run's items (and set the exact ``total``), in one statement.
    items_recorded: Mapped[bool] = mapped_column(server_default="false")
    #: The fan-out has published (with confirms) every pending item up to this ``idperson``.
    fanout_cursor: Mapped[int | None] = mapped_column(BigInteger)
    fanout_done: Mapped[bool] = mapped_column(server_default="false")
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class SyncRunCount(Base):
    """A run's counts, split over shards so that concurrent outcomes do not queue on one row lock.

    A student belongs to shard ``abs(idperson) % SHARDS``. The fan-out sets each shard's
    ``total``; each outcome adds to ``processed`` (and ``failed``). A run's counts are the sums of
    its shards, and only the outcome that completes a shard needs to look at the others.
    """

    __tablename__ = "sync_run_counts"

    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    total: Mapped[int] = mapped_column(Integer, server_default="0")
    processed: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")


class SyncItem(Base):
    """One student in one run: ``pending`` until it reaches ``success`` or ``failed``, once."""

    __tablename__ = "sync_items"
    __table_args__ = (
        Index("sync_items_failed", "run_id", postgresql_where=text("status = 'failed'")),
        # The running run's last outcome in one index entry (antrian_sync_run_idle_seconds; migration 0012).
        Index("sync_items_run_finished", "run_id", text("finished_at DESC NULLS LAST")),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True)
    idperson: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None]


class Tour(Base):
    """A tour with ``quota`` seats left; bookings take seats from it and expiry gives them back."""

    __tablename__ = "tours"
    __table_args__ = (
        CheckConstraint("quota >= 0", name="tours_quota_not_negative"),
        CheckConstraint("price >= 0", name="tours_price_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    quota: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    starts_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Booking(Base):
    """A customer's seats on a tour: ``pending`` until paid, or until it expires or is cancelled."""

    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="bookings_quantity_positive"),
        CheckConstraint("status IN ('pending', 'paid', 'expired', 'cancelled', 'refunded')", name="bookings_status"),
        Index("bookings_pending_expires_at", "expires_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    #: Short, unique, safe to read aloud; also the payment gateway's ``order_id``.
    code: Mapped[str] = mapped_column(Text, unique=True)
    tour_id: Mapped[int] = mapped_column(ForeignKey("tours.id"), index=True)
    customer_name: Mapped[str] = mapped_column(Text)
    customer_email: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)
    total_amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]


class Payment(Base):
    """One payment notification as received, with what it did to its booking (``outcome``)."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint(
            "order_id", "transaction_status", "fraud_status", "transaction_id", name="payments_one_per_notification"
        ),
        # The refund_due payments alone, for the metrics' count and oldest age (migration 0012).
        Index("payments_refund_due", "booking_id", postgresql_include=["received_at"],
              postgresql_where=text("outcome = 'refund_due'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    booking_id: Mapped[int] = mapped_column(ForeignKey("bookings.id"), index=True)
    order_id: Mapped[str] = mapped_column(Text)
    transaction_id: Mapped[str] = mapped_column(Text, server_default="")
    transaction_status: Mapped[str] = mapped_column(Text)
    fraud_status: Mapped[str] = mapped_column(Text, server_default="")
    status_code: Mapped[str] = mapped_column(Text)
    gross_amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    outcome: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class OutboxMessage(Base):
    """A Dramatiq message written in the transaction that made it necessary, until RabbitMQ confirms it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    queue_name: Mapped[str] = mapped_column(Text)
    #: The encoded Dramatiq message, published as is.
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class EmailDelivery(Base):
    """One email per booking and kind, ever: ``sent`` is committed before the message is acknowledged."""

    __tablename__ = "email_deliveries"
    __table_args__ = (
        CheckConstraint("kind IN ('invoice', 'eticket', 'cancellation')", name="email_deliveries_kind"),
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="email_deliveries_status"),
    )

    booking_id: Mapped[int] = mapped_column(ForeignKey("bookings.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    #: The stable ``Message-ID`` header of this booking's email of this kind.
    message_id: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]
    #: The attempt sending it now (no transaction is held across the send), and when that claim lapses; NULL when
    #: no attempt holds it. See ``mailer.emails.deliveries``.
    claim_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    claimed_until: Mapped[datetime | None]


class EmailResend(Base):
    """One email sent once more on purpose by an operator: exactly once per row, whatever redeliveries.

    Normal deliveries (:class:`EmailDelivery`, one per booking and kind) are untouched by it; each row is
    also the audit record of the resend (who asked: ``source``; when: ``requested_at``).
    """

    __tablename__ = "email_resends"
    __table_args__ = (
        CheckConstraint("kind IN ('invoice', 'eticket', 'cancellation')", name="email_resends_kind"),
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="email_resends_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    booking_id: Mapped[int] = mapped_column(ForeignKey("bookings.id"), index=True)
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    #: The resend's own ``Message-ID`` (set by the mailer's first attempt): mail systems must not drop it as a copy.
    message_id: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    #: ``api``, ``admin`` or ``cli``.
    source: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]
    #: As :attr:`EmailDelivery.claim_id` and :attr:`EmailDelivery.claimed_until`.
    claim_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    claimed_until: Mapped[datetime | None]


class ScheduledTaskRun(Base):
    """When each scheduled task was last enqueued: the claim that keeps two schedulers from both enqueueing it."""

    __tablename__ = "scheduled_task_runs"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_enqueued_at: Mapped[datetime | None]


class FailedJob(Base):
    """A message that ran out of attempts (Laravel's ``failed_jobs``): kept until retried or flushed."""

    __tablename__ = "failed_jobs"
    #: The failed-jobs gauge counts by queue and actor from this index alone (migration 0012).
    __table_args__ = (Index("failed_jobs_queue_actor", "queue_name", "actor_name"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[str] = mapped_column(Text, unique=True)
    queue_name: Mapped[str] = mapped_column(Text)
    actor_name: Mapped[str] = mapped_column(Text)
    args: Mapped[Any] = mapped_column(JSONB)
    kwargs: Mapped[Any] = mapped_column(JSONB)
    #: The message's options as it failed, less Dramatiq's bookkeeping of attempts.
    options: Mapped[Any] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer)
    #: ``ExceptionType: message`` of the last attempt.
    exception: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str] = mapped_column(Text, server_default="")
    #: ``host:pid`` of the worker process that gave up on it.
    worker: Mapped[str] = mapped_column(Text, server_default="")
    enqueued_at: Mapped[datetime | None]
    failed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class FailedJobAction(Base):
    """What an operator did to failed jobs (retry, flush, forget one), or the schedule (prune), how many, from where:
    the audit trail metrics count."""

    __tablename__ = "failed_job_actions"
    __table_args__ = (
        CheckConstraint("action IN ('retry', 'flush', 'forget', 'prune')", name="failed_job_actions_action"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action: Mapped[str] = mapped_column(Text)
    queue_name: Mapped[str] = mapped_column(Text)
    jobs: Mapped[int] = mapped_column(Integer)
    #: ``api``, ``admin``, ``cli`` or ``schedule``.
    source: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class IdempotencyKey(Base):
    """A client's ``Idempotency-Key`` on one route, with the answer its first request got: kept 24 hours.

    The row is inserted in the transaction that does the request's work (a booking) and gets its
    ``response_*`` in that same transaction, so another transaction sees the key with its answer or
    not at all. The unique index makes a concurrent request with the same key wait for the first to
    commit (then it reads the answer) or roll back (then it does the work itself).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("route", "caller", "key", name="idempotency_keys_route_caller_key"),
        Index("idempotency_keys_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    #: ``POST /api/bookings``: a key is scoped to the route it was sent to.
    route: Mapped[str] = mapped_column(Text)
    #: Who sent it; ``''`` while there is one API token (kept for per-caller tokens).
    caller: Mapped[str] = mapped_column(Text, server_default="")
    key: Mapped[str] = mapped_column(Text)
    #: SHA-256 (hex) of the canonical JSON of the request's body: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(Text)
    #: The first answer, replayed to every repeat; set in the transaction that inserted the row.
    response_status: Mapped[int | None] = mapped_column(SmallInteger)
    response_body: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MessageWaitCount(Base):
    """How long messages waited before a worker took them (``antrian_message_wait_seconds``'s buckets, kept where
    every process can read them): per queue and per minute, how many fell in each bucket (not cumulative).

    Each worker process adds its counts every few seconds (:mod:`antrian.runtime.wait_time`), so a row is one
    upsert per bucket touched, never one per message; rows older than a day are pruned by the workers.
    """

    __tablename__ = "message_wait_counts"

    #: The minute (UTC) in which the messages started processing.
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    queue_name: Mapped[str] = mapped_column(Text, primary_key=True)
    #: The bucket's upper bound in seconds (``inf`` for the last), as Prometheus' ``le``.
    le: Mapped[float] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class RateLimit(Base):
    """A rate limit's shared budget (:mod:`antrian.rate_limit`): GCRA's theoretical arrival time, the moment by which
    every token handed out so far is spent at the limit's pace. A process reserves a few tokens at a time by moving
    ``tat`` on by their share of time, in one upsert; the row is made by the first reservation."""

    __tablename__ = "rate_limits"

    #: The limit's name: ``upstream`` (``UPSTREAM_RATE_LIMIT``) or ``smtp`` (``SMTP_RATE_LIMIT``).
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    tat: Mapped[datetime]


class PausedQueue(Base):
    """A queue an operator paused: while the row exists no worker takes its messages (:mod:`antrian.jobs.pauses`);
    deleting it resumes the queue. Its delay queue keeps moving due messages back onto it."""

    __tablename__ = "paused_queues"

    queue_name: Mapped[str] = mapped_column(Text, primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: ``api``, ``admin`` or ``cli``.
    paused_by: Mapped[str] = mapped_column(Text)


class OperatorToken(Base):
    """A named operator's bearer token and role (``antrian tokens create``): only its SHA-256 is kept.

    A revoked token stays, so the audit trail's names keep meaning someone; a name is unique among live tokens.
    """

    __tablename__ = "operator_tokens"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="operator_tokens_role"),
        Index("operator_tokens_live_name", "name", unique=True, postgresql_where=text("revoked_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    #: SHA-256 (hex) of the secret; the secret itself is shown once, when created.
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    #: The secret's first characters, to recognise it in a list (too few to guess it from).
    prefix: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_by: Mapped[str] = mapped_column(Text)
    #: Updated at most once a minute, so that a busy client costs no write per request.
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(Text)


class AdminSession(Base):
    """A signed-in admin page: the cookie holds a random id whose SHA-256 is kept here, so that logging out or
    revoking the token it was opened with ends it at once, wherever the cookie was copied to."""

    __tablename__ = "admin_sessions"

    id_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    #: The SHA-256 of the token the session was opened with: an operator token's, or ``API_TOKEN``'s.
    token_hash: Mapped[str] = mapped_column(Text, index=True)
    operator: Mapped[str] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]


class LoginFailure(Base):
    """Failed sign-ins in the current window, per client address and per token prefix: the throttle's count,
    shared by every sync-api process."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    window_started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    failures: Mapped[int] = mapped_column(Integer, server_default="0")


class AuditEvent(Base):
    """Who did what: one row per state-changing action of an operator, written in the action's own transaction."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("audit_events_operator_id", "operator", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: The token's name (``API_TOKEN`` for the bootstrap token), or ``cli:<user>`` for a command.
    operator: Mapped[str] = mapped_column(Text)
    #: ``api``, ``admin`` (the pages) or ``cli``.
    via: Mapped[str] = mapped_column(Text)
    #: e.g. ``retry``, ``flush``, ``forget``, ``cancel``, ``resume``, ``pause``, ``resend``, ``start``,
    #: ``token-create``, ``token-revoke``, ``login``, ``logout``.
    action: Mapped[str] = mapped_column(Text)
    #: What it acted on, e.g. ``queue:emails``, ``failed-job:12``, ``sync-run:3``, ``booking:5``, ``token:alice``.
    target: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
