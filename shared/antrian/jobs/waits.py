"""How long messages waited before a worker took them: ``message_wait_counts``, read by ``/api/queues``.

Every worker process observes ``antrian_message_wait_seconds{queue,actor}`` (:mod:`antrian.runtime.wait_time`)
and, every few seconds, adds the same observations, bucketed the same way, to ``message_wait_counts``: one row per
queue, minute and bucket, so a flush is a handful of upserts whatever the message rate. Any process (sync-api,
the ``antrian`` command) then estimates a queue's p50 and p95 of the last :data:`WINDOW_MINUTES` minutes from
those counts, as Prometheus' ``histogram_quantile`` would from the histogram.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert

from antrian.db.models import MessageWaitCount

#: Upper bounds (seconds) of the wait histogram's buckets, 5 ms to an hour; ``+Inf`` is added after them.
#: 120 s is a bound because the emails alert's threshold is 2 minutes (a quantile is exact at a bound).
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
)
INF = math.inf
#: Minutes of waits ``/api/queues`` summarises (the current minute included), as the alert's ``rate(...[5m])``.
WINDOW_MINUTES = 5
#: How long the per-minute counts are kept.
KEEP = timedelta(days=1)


@dataclass(frozen=True)
class WaitSummary:
    """A queue's waits over the window: estimated median and 95th percentile (seconds), and how many messages."""

    p50_seconds: float | None
    p95_seconds: float | None
    messages: int


def upper_bound(seconds: float) -> float:
    """The ``le`` of the bucket a wait of ``seconds`` falls in (``inf`` past the last bound)."""
    index = bisect.bisect_left(BUCKETS, seconds)
    return BUCKETS[index] if index < len(BUCKETS) else INF


def quantile(q: float, counts: Mapping[float, int]) -> float | None:
    """The ``q`` quantile of bucketed observations (``le`` → count in that bucket, not cumulative), as
    Prometheus' ``histogram_quantile``: linear within the bucket the rank falls in; the highest finite bound
    when it falls in ``+Inf``. ``None`` without observations."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * total
    cumulative, previous = 0, 0.0
    for le in sorted(counts):
        count = counts[le]
        if count > 0 and cumulative + count >= rank:
            if le == INF:  # only buckets with messages are stored: the highest bound is the last of BUCKETS
                return BUCKETS[-1]
            lower = _lower_bound(le, previous)
            return lower + (le - lower) * (rank - cumulative) / count
        cumulative += count
        previous = le
    return None  # not reached: the last bucket holds the rank


def _lower_bound(le: float, previous: float) -> float:
    """The bound below ``le``: the bucket before it in :data:`BUCKETS` (stored counts leave empty buckets out)."""
    index = bisect.bisect_left(BUCKETS, le)
    if index < len(BUCKETS) and BUCKETS[index] == le:
        return BUCKETS[index - 1] if index > 0 else 0.0
    return previous  # a bound of other buckets than these (counts stored before they changed)


def add(connection: Connection, counts: Mapping[tuple[datetime, str, float], int]) -> None:
    """Add ``(minute, queue, le) → messages`` to the stored counts (in ``connection``'s transaction).

    Rows are upserted in key order, so that processes flushing at once lock them in the same order.
    """
    rows = [{"minute": minute, "queue_name": queue, "le": le, "count": count}
            for (minute, queue, le), count in sorted(counts.items()) if count > 0]
    if not rows:
        return
    statement = insert(MessageWaitCount).values(rows)
    connection.execute(statement.on_conflict_do_update(
        index_elements=["minute", "queue_name", "le"],
        set_={"count": MessageWaitCount.count + statement.excluded.count},
    ))


def prune(connection: Connection, keep: timedelta = KEEP) -> int:
    """Delete counts older than ``keep``; return how many rows went."""
    result = connection.execute(delete(MessageWaitCount).where(MessageWaitCount.minute < func.now() - keep))
    return result.rowcount or 0


def summaries(connection: Connection, minutes: int = WINDOW_MINUTES) -> dict[str, WaitSummary]:
    """Each queue's waits of the last ``minutes`` minutes (the current one included), by queue name."""
    since = func.date_trunc("minute", func.now()) - text(f"interval '{int(minutes) - 1} minutes'")
    rows = connection.execute(
        select(MessageWaitCount.queue_name, MessageWaitCount.le, func.sum(MessageWaitCount.count))
        .where(MessageWaitCount.minute >= since)
        .group_by(MessageWaitCount.queue_name, MessageWaitCount.le)
    ).all()
    by_queue: dict[str, dict[float, int]] = {}
    for queue, le, count in rows:
        by_queue.setdefault(queue, {})[float(le)] = int(count)
    return {queue: summarise(counts) for queue, counts in by_queue.items()}


def summarise(counts: Mapping[float, int]) -> WaitSummary:
    """p50, p95 (rounded to the millisecond) and the number of observations of bucketed counts."""
    p50, p95 = quantile(0.5, counts), quantile(0.95, counts)
    return WaitSummary(
        p50_seconds=None if p50 is None else round(p50, 3),
        p95_seconds=None if p95 is None else round(p95, 3),
        messages=sum(counts.values()),
    )
