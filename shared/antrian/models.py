"""SQLAlchemy 2.0 models of the tables other programs may read (SPEC's "Data")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, SmallInteger, Text, func, text
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
    __table_args__ = (Index("sync_items_failed", "run_id", postgresql_where=text("status = 'failed'")),)

    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True)
    idperson: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None]
