"""Part (g): the expiry sweep against the old system's one-transaction-per-booking loop, and the sweep's plan.

1. ``bookings`` pending bookings past their deadline over ``tours`` tours, plus pending bookings not yet
   due, paid ones and already expired ones (so the sweep has to choose), regenerated before every run
   by one INSERT ... SELECT. On that data:

   - ``booking_expiry.bookings.sweep.sweep(engine)``, called in-process: the code the worker runs (its actor only
     wraps it in Dramatiq), on an engine made as the worker makes it, with its JSON log lines (one per
     batch naming its expired bookings, one ``sweep_done``) written to a file as the worker writes them to stderr;
     each batch size of :data:`BATCH_SIZES` too, ``repeats`` times each, interleaved;
   - the old system's loop (Laravel, below) in SQLAlchemy: one SELECT of the due bookings, then per
     booking its own transaction of BEGIN, SELECT ... FOR UPDATE, SELECT of the tour, UPDATE tours
     quota + quantity, UPDATE bookings status, COMMIT, each a round trip (psycopg sends BEGIN as a
     statement of its own, as PDO does). Timed on the whole set if its first ``loop_subset`` bookings
     say it ends within ``loop_budget_s``; otherwise stopped there and extrapolated linearly;
   - after each, a check of the end state: every due booking expired (or, after a partial loop, the
     ones it reached), every tour's quota back to its start, no other booking touched; the sweep's
     and a complete loop's end states compared row by row (a digest of every booking's status and
     every tour's quota);
   - per batch size, EXPLAIN (ANALYZE, BUFFERS) of its first batch (rolled back): how the UPDATE reaches the
     chosen bookings on this table;
   - per batch size once more, with a probe process updating one tour row at a time every 10 ms (as a
     booking does): the longest it waited is what a booking waits while a batch holds the tours' row locks.

   The Laravel code::

       $expired = Booking::where('status','pending')->where('created_at','<=', now()->subMinutes(30))->get();
       foreach ($expired as $booking) { DB::transaction(function () use ($booking) {
           $booking = Booking::lockForUpdate()->find($booking->id);
           if ($booking->status === 'pending') {
               $booking->tour->increment('quota', $booking->quantity); $booking->update(['status' => 'expired']); }
       }); }

2. ``plan_bookings`` bookings (most pending and due later, some paid or expired, exactly ``plan_due``
   pending and due), ANALYZEd; then ``EXPLAIN (ANALYZE, BUFFERS)`` of the very statement the sweep runs
   for one batch (captured from ``antrian.bookings.seats.expire_due_bookings`` as it is sent, not copied), in a
   transaction rolled back (three times; the first is reported, the others shown); the same statement with
   the LIMITs of :data:`PLAN_BATCH_SIZES`, to see at which batch size the planner stops reaching the chosen
   bookings by their primary key and scans the whole table instead; then the whole sweep on that data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, event, text

from . import common, probes

#: Batch sizes tried; the product's default (``booking_expiry.bookings.sweep.BATCH_SIZE``) is called as
#: ``sweep(engine)``.
BATCH_SIZES = (1_000, 5_000, 20_000, 100_000)
#: Every tour's quota once every due booking has given its seats back (the generated quota is this minus the
#: due bookings' seats).
START_QUOTA = 1_000_000
PRICE = 150_000
#: Shares of the other bookings beside the due ones in (1): not yet due, paid, already expired.
OTHERS_1 = {"FUT": 0.10, "PAID": 0.10, "EXP": 0.05}
#: In (2): paid and already expired; the rest is pending and due later.
OTHERS_2 = {"PAID": 0.05, "EXP": 0.05}


def run(engine: Engine, *, bookings: int, tours: int, repeats: int, loop_subset: int, loop_budget_s: int,
        plan_bookings: int, plan_due: int) -> dict:
    from antrian.db.engine import make_engine
    from booking_expiry.bookings.sweep import BATCH_SIZE

    # The worker's own engine (booking_expiry.bookings.actors.configure): pre-ping, READ COMMITTED, pool of 2.
    worker_engine = make_engine(common.DATABASE_URL, pool_size=2)
    try:
        with worker_engine.connect():
            pass  # a warm pool, as in a worker that has swept before
        mix = _mix(bookings, OTHERS_1, due=bookings)
        common.log(f"(g) data: {mix} over {tours} tours; batch sizes {', '.join(map(str, BATCH_SIZES))},"
                   f" {repeats} run(s) each")
        runs: dict[int, list[dict]] = {size: [] for size in BATCH_SIZES}
        for repeat in range(repeats):
            for size in BATCH_SIZES:
                _generate(engine, tours, mix)
                runs[size].append(_timed_sweep(worker_engine, engine, size, default=size == BATCH_SIZE, mix=mix))
                common.log(f"(g) sweep batch {size}, run {repeat + 1}: {runs[size][-1]['seconds']}s"
                           f" ({runs[size][-1]['batches']} batches)")
        by_size = {size: _summary(size, results) for size, results in runs.items()}
        default = by_size[BATCH_SIZE]

        _generate(engine, tours, mix)
        quiet = _timed_sweep(worker_engine, engine, BATCH_SIZE, default=True, mix=mix, log_lines=False)
        common.log(f"(g) sweep without its log lines: {quiet['seconds']}s")

        for size in BATCH_SIZES:
            _generate(engine, tours, mix)
            probed = _timed_sweep(worker_engine, engine, size, default=size == BATCH_SIZE, mix=mix, probe=True)
            by_size[size]["probe"] = probed["probe"]
            by_size[size]["probe_run_seconds"] = probed["seconds"]
            by_size[size]["probe_run_end_state_ok"] = probed["end_state"]["ok"]
            common.log(f"(g) sweep batch {size} with a tour-update probe: a booking waited at most"
                       f" {probed['probe']['max_ms']} ms")

        _generate(engine, tours, mix)
        statement, parameters = _sweep_statement(engine, BATCH_SIZE)
        for size in BATCH_SIZES:
            lines = _explain(engine, statement, {**parameters, "limit": size})
            by_size[size]["plan"] = {"scan": _scan_of_chosen(lines), "update_join": _join_of_ended(lines),
                                     "total_ms": round(sum(_times_ms(lines)), 3), "lines": lines}

        _generate(engine, tours, mix)
        loop = _laravel_loop(engine, mix=mix, subset=loop_subset, budget_s=loop_budget_s)
        common.log(f"(g) per-booking loop: {loop['seconds']}s ({loop['how']})")
        same = loop["complete"] and loop["end_state"]["digest"] == default["runs"][0]["end_state"]["digest"]

        plan = _plan(engine, worker_engine, tours=tours, total=plan_bookings, due=plan_due)
    finally:
        worker_engine.dispose()
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE tours, bookings, payments, email_deliveries, outbox RESTART IDENTITY"
                                    " CASCADE"))
    ratio = round(loop["seconds"] / default["median_s"], 1)
    ok = all(r["end_state"]["ok"] for s in by_size.values() for r in s["runs"]) \
        and all(s["probe_run_end_state_ok"] for s in by_size.values()) and loop["end_state"]["ok"] \
        and quiet["end_state"]["ok"] and plan["sweep"]["end_state"]["ok"]
    common.log(f"(g) sweep {default['median_s']}s vs loop {loop['seconds']}s: {ratio}x; end states ok: {ok};"
               f" plan: index scan {plan['index_scan']}, {plan['planning_ms']} + {plan['execution_ms']} ms")
    return {"product_code": _product_code(), "bookings": bookings, "tours": tours, "mix": mix, "repeats": repeats,
            "default_batch_size": BATCH_SIZE,
            "sweep": default, "batch_sizes": {str(size): summary for size, summary in by_size.items()},
            "sweep_without_log_lines": quiet, "loop": loop, "ratio": ratio,
            "end_states_ok": ok, "same_end_state": same, "plan": plan}


def _product_code() -> dict:
    """Which sweep was measured: the commit checked out and a hash of the two files as imported (they may differ
    from the commit while someone edits them)."""
    import antrian.bookings.seats
    import booking_expiry.bookings.sweep

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=common.ROOT)
    files = {module.__name__: hashlib.sha1(Path(module.__file__).read_bytes()).hexdigest()[:12]
             for module in (booking_expiry.bookings.sweep, antrian.bookings.seats)}
    return {"head": head.stdout.strip(), "files_sha1": files}


# --------------------------------------------------------------------------- data


def _mix(total: int, shares: dict[str, float], *, due: int) -> dict[str, int]:
    """How many bookings of each kind: ``due`` due ones and the others by their shares of ``total``.

    With ``due == total`` the shares are of the due ones, added on top; else the remainder is ``FUT``."""
    if due == total:
        return {"DUE": due, **{kind: round(due * share) for kind, share in shares.items()}}
    mix = {"DUE": due, **{kind: round(total * share) for kind, share in shares.items()}}
    mix["FUT"] = total - sum(mix.values())
    return mix


def _generate(engine: Engine, tours: int, mix: dict[str, int]) -> float:
    """Empty the booking tables, then ``tours`` tours and the bookings of ``mix`` in one INSERT each.

    Booking ``i`` (its id) is of the kind its place ``p = i * m mod total`` falls in (``m`` coprime to the
    total: a fixed shuffle, so due bookings lie among the others as they would); ``DUE`` ones are pending
    and expired 1 minute to 1 day ago, ``FUT`` pending and expire in 20 to 30 minutes, ``PAID`` and ``EXP``
    expired earlier. Quantities are 1 to 4; created_at is 30 minutes before expires_at. Each tour's quota
    is :data:`START_QUOTA` less its due bookings' seats. Then VACUUM ANALYZE and a CHECKPOINT, so that every
    run starts from the same state."""
    started = time.perf_counter()
    total = sum(mix.values())
    multiplier = next(m for m in range(7919, 7919 + total + 2) if math.gcd(m, total) == 1)
    bounds = {"due": mix["DUE"], "fut": mix["DUE"] + mix.get("FUT", 0),
              "paid": mix["DUE"] + mix.get("FUT", 0) + mix.get("PAID", 0)}
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE tours, bookings, payments, email_deliveries, outbox RESTART IDENTITY"
                                " CASCADE"))
        connection.execute(
            text("INSERT INTO tours (id, name, quota, price, starts_at) SELECT t, 'Bench tour ' || t, :quota,"
                 " :price, now() + interval '30 days' FROM generate_series(1, :tours) AS t"),
            {"quota": START_QUOTA, "price": PRICE, "tours": tours},
        )
        connection.execute(
            text(
                """
                INSERT INTO bookings (id, code, tour_id, customer_name, customer_email, quantity, total_amount,
                                      status, created_at, expires_at, paid_at)
                SELECT i, kind || '-' || i, 1 + i % :tours, 'Bench Customer', 'bench@example.com', quantity,
                       quantity * :price,
                       CASE kind WHEN 'PAID' THEN 'paid' WHEN 'EXP' THEN 'expired' ELSE 'pending' END,
                       expires_at - interval '30 minutes', expires_at,
                       CASE kind WHEN 'PAID' THEN expires_at - interval '10 minutes' END
                FROM (
                    SELECT i, kind, 1 + (i / :tours) % 4 AS quantity,
                           CASE kind WHEN 'FUT' THEN now() + make_interval(secs => 1200 + p % 600)
                                     ELSE now() - make_interval(secs => 60 + p % 86340) END AS expires_at
                    FROM (
                        SELECT i, p, CASE WHEN p < :due THEN 'DUE' WHEN p < :fut THEN 'FUT'
                                          WHEN p < :paid THEN 'PAID' ELSE 'EXP' END AS kind
                        FROM (SELECT i, (i * :multiplier) % :total AS p
                              FROM generate_series(1::bigint, :total) AS i) AS placed
                    ) AS kinds
                ) AS rows
                """
            ),
            {"tours": tours, "price": PRICE, "multiplier": multiplier, "total": total, **bounds},
        )
        connection.execute(text(
            "UPDATE tours SET quota = quota - seats.quantity"
            " FROM (SELECT tour_id, sum(quantity) AS quantity FROM bookings WHERE code LIKE 'DUE-%'"
            " GROUP BY tour_id) AS seats WHERE tours.id = seats.tour_id"
        ))
    common.vacuum(engine, "tours", "bookings")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("CHECKPOINT"))
    return round(time.perf_counter() - started, 1)


def _end_state(engine: Engine, mix: dict[str, int], *, expired_due: int) -> dict:
    """Is the data as it must be after ``expired_due`` due bookings were expired, and nothing else changed?

    Every booking's kind by status; every tour's quota plus its still-pending due bookings' seats against
    :data:`START_QUOTA`; and a digest of every booking's status and every tour's quota, to compare runs."""
    with engine.connect() as connection:
        counts = {f"{row.kind} {row.status}": row.n for row in connection.execute(text(
            "SELECT split_part(code, '-', 1) AS kind, status, count(*) AS n FROM bookings GROUP BY 1, 2 ORDER BY 1, 2"
        ))}
        tours_off = connection.execute(text(
            """SELECT count(*) FROM tours LEFT JOIN (
                   SELECT tour_id, sum(quantity) AS quantity FROM bookings
                   WHERE code LIKE 'DUE-%' AND status = 'pending' GROUP BY tour_id) AS held
               ON held.tour_id = tours.id
               WHERE tours.quota + coalesce(held.quantity, 0) <> :start"""
        ), {"start": START_QUOTA}).scalar_one()
        digest = connection.execute(text(
            "SELECT md5(string_agg(id || ':' || status, ',' ORDER BY id)) FROM bookings"
        )).scalar_one() + "/" + connection.execute(text(
            "SELECT md5(string_agg(id || ':' || quota, ',' ORDER BY id)) FROM tours"
        )).scalar_one()
    expected = {"DUE expired": expired_due, "DUE pending": mix["DUE"] - expired_due, "FUT pending": mix.get("FUT", 0),
                "PAID paid": mix.get("PAID", 0), "EXP expired": mix.get("EXP", 0)}
    expected = {key: n for key, n in expected.items() if n}
    return {"ok": counts == expected and tours_off == 0, "bookings_by_kind_and_status": counts,
            "expected": expected, "tours_quota_off": tours_off, "digest": digest}


# --------------------------------------------------------------------------- the sweep


def _timed_sweep(worker_engine: Engine, engine: Engine, batch_size: int, *, default: bool, mix: dict[str, int],
                 log_lines: bool = True, probe: bool = False) -> dict:
    """One ``sweep()`` (as ``sweep(engine)`` for the default batch size), timed from call to return."""
    from booking_expiry.bookings.sweep import sweep

    path = common.log_path(f"booking-expiry-sweep-{batch_size}.log")
    prober = _TourProbe(f"tour-probe-{batch_size}") if probe else _nothing()
    with _worker_logging(path if log_lines else None), prober:
        with probes.CpuMeter() as cpu:
            started = time.perf_counter()
            result = sweep(worker_engine) if default else sweep(worker_engine, batch_size=batch_size)
            seconds = time.perf_counter() - started
    if not result.ran:
        raise RuntimeError("the sweep did not run: another sweep holds its advisory lock")
    if getattr(result, "interrupted", False):
        raise RuntimeError(f"the sweep was interrupted (a batch timed out) after {result.expired} bookings")
    figures = {"batch_size": batch_size, "seconds": round(seconds, 3), "expired": result.expired,
               "seats": result.seats, "batches": result.batches,
               "ms_per_batch": round(seconds * 1000 / max(result.batches, 1), 1),
               "end_state": _end_state(engine, mix, expired_due=mix["DUE"]), "machine": cpu.report()}
    if result.expired != mix["DUE"]:
        figures["end_state"]["ok"] = False
    if log_lines:
        figures["log"] = _log_summary(path, result.expired)
        figures["end_state"]["ok"] = figures["end_state"]["ok"] and figures["log"]["ok"]
    if probe:
        figures["probe"] = prober.report()
    return figures


@contextmanager
def _nothing():
    yield None


@contextmanager
def _worker_logging(path: Path | None):
    """booking_expiry's log lines as the worker writes them (antrian.logging's JSON, level INFO), to ``path``;
    with None, at WARNING (no line is formatted)."""
    from antrian.logging import json_formatter

    logger = logging.getLogger("booking_expiry")
    saved = logger.level, logger.propagate
    handler = None
    if path is not None:
        handler = logging.FileHandler(path, mode="w")
        handler.setFormatter(json_formatter("booking-expiry"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if path is not None else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.level, logger.propagate = saved
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()


def _log_summary(path: Path, expired: int) -> dict:
    """Count the sweep's log lines (one ``bookings_expired`` per batch naming its bookings' codes, one
    ``sweep_done``; an older sweep's one ``booking_expired`` per booking counts too) and check that they name
    every expired booking exactly once; keep the ``sweep_done`` line and drop the file."""
    events: dict[str, int] = {}
    done = None
    named: list[str] = []
    size = path.stat().st_size
    with path.open() as lines:
        for line in lines:
            record = json.loads(line)
            events[record.get("event", "?")] = events.get(record.get("event", "?"), 0) + 1
            if record.get("event") == "sweep_done":
                done = record
            elif record.get("event") == "bookings_expired":
                named.extend(record["codes"])
            elif record.get("event") == "booking_expired":
                named.append(record["code"])
    path.unlink()
    return {"events": events, "bytes": size, "sweep_done": done, "bookings_named": len(named),
            "ok": len(named) == len(set(named)) == expired and events.get("sweep_done") == 1}


def _summary(size: int, results: list[dict]) -> dict:
    seconds = sorted(r["seconds"] for r in results)
    median = common.median(seconds)
    return {"batch_size": size, "median_s": round(median, 3), "min_s": seconds[0], "max_s": seconds[-1],
            "batches": results[0]["batches"], "ms_per_batch": round(median * 1000 / max(results[0]["batches"], 1), 1),
            "bookings_per_s": round(results[0]["expired"] / median), "runs": results}


class _TourProbe:
    """``python -m bench.expiry_sweep probe``, a process of its own (so that the bench's GIL is no part of what it
    measures): every 10 ms one autocommit ``UPDATE tours SET quota = quota WHERE id = k``, k going round every
    tour, timed. That is the row lock a booking's ``take_seats`` needs: the time it waits while a sweep's batch
    holds the tours' locks. Only the updates sent while the sweep ran are reported."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _TourProbe:
        self.service = common.Service(self.name, [sys.executable, "-m", "bench.expiry_sweep", "probe"],
                                      common.base_env()).start()
        common.wait_until(lambda: self.service.log().count("\n") >= 5, timeout=30, interval=0.05,
                          what=f"the tour probe's first updates\n{self.service.log()[-2000:]}")
        self.started = time.time()
        return self

    def __exit__(self, *exc_info) -> None:
        self.ended = time.time()
        time.sleep(0.05)  # the update sent last while the sweep ran has its answer by now, or is still waiting
        self.service.stop()

    def report(self) -> dict:
        latencies = []
        for line in self.service.log().splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0][:1].isdigit() and self.started <= float(fields[0]) <= self.ended:
                latencies.append(float(fields[1]))
        latencies.sort()
        if not latencies:
            return {"updates": 0, "max_ms": None}
        return {"updates": len(latencies), "p50_ms": round(latencies[len(latencies) // 2], 1),
                "p99_ms": round(latencies[max(math.ceil(0.99 * len(latencies)) - 1, 0)], 1),
                "max_ms": round(latencies[-1], 1)}


def _probe_main() -> None:
    """The tour probe's process: one line "<unix time sent> <ms>" per update, until SIGTERM."""
    import os

    import psycopg

    # The database the bench gave it (common.base_env), so that a bench on a database of its own probes that one.
    url = os.environ.get("DATABASE_URL", common.DATABASE_URL)
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as db:
        tours = [row[0] for row in db.execute("SELECT id FROM tours ORDER BY id")]
        n = 0
        while True:
            sent = time.time()
            started = time.perf_counter()
            db.execute("UPDATE tours SET quota = quota WHERE id = %s", (tours[n % len(tours)],))
            print(f"{sent:.4f} {(time.perf_counter() - started) * 1000:.3f}", flush=True)
            n += 1
            time.sleep(max(0.01 - (time.time() - sent), 0))


# --------------------------------------------------------------------------- the old system's loop


def _laravel_loop(engine: Engine, *, mix: dict[str, int], subset: int, budget_s: int) -> dict:
    """The Laravel expiry command, statement for statement; stopped after ``subset`` bookings if those say the
    whole set would take longer than ``budget_s``, and then extrapolated linearly."""
    due = mix["DUE"]
    started = time.perf_counter()
    with engine.connect() as connection:
        # Booking::where('status','pending')->where('created_at','<=', now()->subMinutes(30))->get()
        expired = connection.execute(text(
            "SELECT * FROM bookings WHERE status = 'pending' AND created_at <= now() - interval '30 minutes'"
        )).all()
        connection.commit()
        select_s = time.perf_counter() - started
        done = 0
        stopped_at = None
        for booking in expired:
            with connection.begin():  # DB::transaction: BEGIN ... COMMIT
                # Booking::lockForUpdate()->find($booking->id)
                locked = connection.execute(text("SELECT * FROM bookings WHERE id = :id LIMIT 1 FOR UPDATE"),
                                            {"id": booking.id}).one()
                if locked.status == "pending":
                    # $booking->tour, then ->increment('quota', $booking->quantity)
                    tour = connection.execute(text("SELECT * FROM tours WHERE id = :id LIMIT 1"),
                                              {"id": locked.tour_id}).one()
                    connection.execute(text("UPDATE tours SET quota = quota + :quantity WHERE id = :id"),
                                       {"quantity": locked.quantity, "id": tour.id})
                    # $booking->update(['status' => 'expired'])
                    connection.execute(text("UPDATE bookings SET status = 'expired' WHERE id = :id"),
                                       {"id": locked.id})
            done += 1
            if done == subset and done < len(expired):
                estimate = select_s + (time.perf_counter() - started - select_s) * len(expired) / subset
                if estimate > budget_s:
                    stopped_at = time.perf_counter()
                    break
    measured = (stopped_at or time.perf_counter()) - started
    complete = stopped_at is None
    per_booking_ms = (measured - select_s) * 1000 / done
    seconds = measured if complete else select_s + per_booking_ms * len(expired) / 1000
    return {"found": len(expired), "processed": done, "complete": complete,
            "how": f"measured on all {done:,}" if complete else
                   f"measured on the first {done:,} of {len(expired):,} ({measured:.1f}s), extrapolated linearly",
            "seconds": round(seconds, 2), "measured_s": round(measured, 2), "select_s": round(select_s, 3),
            "per_booking_ms": round(per_booking_ms, 3), "round_trips_per_booking": 6,
            "end_state": _end_state(engine, mix, expired_due=done if len(expired) == due else -1)}


# --------------------------------------------------------------------------- (2) the plan


class _Captured(Exception):
    """Raised before the captured statement reaches the server: it is only wanted, not run."""


def _sweep_statement(engine: Engine, batch_size: int) -> tuple[str, dict]:
    """The statement ``expire_due_bookings`` sends for one batch, and its parameters, exactly as psycopg gets them."""
    from antrian.bookings.seats import expire_due_bookings

    captured = []

    def grab(connection, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))
        raise _Captured

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", grab)
        try:
            with connection.begin():
                expire_due_bookings(connection, batch_size)
        except _Captured:
            pass
        finally:
            event.remove(connection, "before_cursor_execute", grab)
    if len(captured) != 1:
        raise RuntimeError(f"expected one statement from expire_due_bookings, got {len(captured)}")
    return captured[0]


#: Batch sizes whose plan (2) shows on the large table: where the UPDATE stops looking its rows up by id.
PLAN_BATCH_SIZES = (1_000, 5_000, 10_000, 20_000, 100_000)
_NODE = re.compile(r"->\s+(.+?)\s+\(cost=")


def _section(lines: list[str], start: str, end: str) -> list[str]:
    """The plan's lines from the one ending with ``start`` (e.g. "CTE chosen") up to the one ending with ``end``."""
    names = [line.strip() for line in lines]
    first = names.index(start)
    return lines[first:names.index(end, first)]


def _scan_of_chosen(lines: list[str]) -> str:
    """How ``chosen`` finds the due bookings: its scan node, e.g. "Index Scan using bookings_pending_expires_at
    on bookings", or "Bitmap Heap Scan on bookings <- Bitmap Index Scan on bookings_pending_expires_at" (which
    reads that index too, but all of the due part, then sorts it)."""
    nodes = [match.group(1) for line in _section(lines, "CTE chosen", "CTE ended")
             if (match := _NODE.search(line)) and "Scan" in match.group(1)]
    return " <- ".join(nodes) if nodes else "?"


def _join_of_ended(lines: list[str]) -> str:
    """How the UPDATE of ``ended`` reaches the chosen bookings: one primary-key lookup each, or the whole table."""
    nodes = [match.group(1) for line in _section(lines, "CTE ended", "CTE released")
             if (match := _NODE.search(line))]
    if any(node.startswith("Seq Scan on bookings") for node in nodes):
        return "hash join over a seq scan of bookings"
    if any(node.startswith("Merge Join") for node in nodes):
        return "merge join over a full scan of bookings_pkey"
    if any(node.startswith("Nested Loop") for node in nodes):
        return "nested loop, one bookings_pkey lookup per chosen booking"
    if any(node.startswith("Index Scan using bookings_pkey") for node in nodes):
        return "one bookings_pkey scan over the chosen ids (= ANY(array))"
    return " / ".join(nodes[:3])


def _explain(engine: Engine, statement: str, parameters: dict) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement in a transaction rolled back: the data stays as generated."""
    with engine.connect() as connection:
        with connection.begin() as transaction:
            lines = [row[0] for row in connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                                                   parameters)]
            transaction.rollback()
    return lines


def _times_ms(lines: list[str]) -> tuple[float, float]:
    text_ = "\n".join(lines)
    return tuple(float(re.search(rf"{what} Time: ([\d.]+) ms", text_).group(1)) for what in ("Planning", "Execution"))


def _plan(engine: Engine, worker_engine: Engine, *, tours: int, total: int, due: int) -> dict:
    from booking_expiry.bookings.sweep import BATCH_SIZE

    mix = _mix(total, OTHERS_2, due=due)
    common.log(f"(g) plan data: {mix} over {tours} tours")
    generate_s = _generate(engine, tours, mix)
    statement, parameters = _sweep_statement(engine, BATCH_SIZE)
    explains = [_explain(engine, statement, parameters) for _ in range(3)]
    first = explains[0]
    planning, execution = _times_ms(first)
    scans = {_scan_of_chosen(lines) for lines in explains}
    index_scan = scans == {"Index Scan using bookings_pending_expires_at on bookings"}
    by_size = {}
    for size in PLAN_BATCH_SIZES:
        lines = first if size == BATCH_SIZE else _explain(engine, statement, {**parameters, "limit": size})
        by_size[str(size)] = {"scan": _scan_of_chosen(lines), "update_join": _join_of_ended(lines),
                              "total_ms": round(sum(_times_ms(lines)), 3)}
        if size != BATCH_SIZE:
            by_size[str(size)]["plan"] = lines
    still = _end_state(engine, mix, expired_due=0)
    sweep = _timed_sweep(worker_engine, engine, BATCH_SIZE, default=True, mix=mix)
    return {"bookings": total, "mix": mix, "generate_s": generate_s, "statement": statement,
            "parameters": dict(parameters), "index_scan": "yes" if index_scan else "no", "scan": " / ".join(scans),
            "update_join": _join_of_ended(first), "planning_ms": planning, "execution_ms": execution,
            "total_ms": round(planning + execution, 3),
            "repeated_total_ms": [round(sum(_times_ms(lines)), 3) for lines in explains[1:]], "plan": first,
            "batch_sizes": by_size, "data_unchanged_after_explain": still["ok"], "sweep": sweep}


if __name__ == "__main__" and sys.argv[1:] == ["probe"]:
    _probe_main()
