"""The soak's end: wait until nothing is in flight, then check every invariant against the database and the mail
sink's files. Each broken invariant is one line in ``violations`` (the soak then exits 1); ``figures`` are what
was counted on the way.

- each student counted once per run: every run finished, ``total`` = the students, one outcome per item,
  processed = total (shards, items and the API's answer agree), failed = the items failed;
- no failed job lost: every failed student of every run has its ``failed_jobs`` row, and no other job failed;
- exactly one email per booking and kind: every delivery row ``sent``, every pending booking's invoice and
  every paid booking's e-ticket among them, the mail sink holding each sent ``Message-ID`` once and nothing
  else (a copy sent again by a mailer SIGKILLed between its SMTP send and its commit, the window
  docs/exactness.md names, is counted apart);
- seats conserved: for every tour, the quota it was made with = its quota + the seats of its pending and
  paid bookings; every booking answered 201 exists, every booking answered paid is paid;
- no message lost: the outbox empty and every queue (delay and dead-letter queues too) drained.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from sqlalchemy import create_engine, text

from tests import support

#: The first bytes of a kept message hold its headers.
HEADER_BYTES = 16_384
#: A copy is in the documented window when its first copy reached the sink at most KILL_WINDOW_S before a
#: SIGKILL of the mailer, or at most KILL_LAG_S after it (the message was on its way: the sink writes the file
#: once it has read all of it). The send and the commit are milliseconds apart; this allows for a loaded machine.
KILL_WINDOW_S = 10.0
KILL_LAG_S = 5.0
EXAMPLES = 5


def wait_drained(database_url: str, broker_url: str, vhost: str, *, stall_s: float,
                 limit_s: float = 3600) -> bool | str:
    """Wait until the outbox is empty and every queue holds nothing ready or unacknowledged, twice in a row
    (the expiry sweep's own message comes and goes every EXPIRY_SWEEP_SECONDS); True, or what was left once
    nothing had moved for ``stall_s`` (a backlog still shrinking is waited for, up to ``limit_s``)."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    started = time.monotonic()
    last_progress, least = started, None
    quiet = 0
    left: object = None
    try:
        while time.monotonic() - last_progress < stall_s and time.monotonic() - started < limit_s:
            with engine.connect() as connection:
                outbox = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
            counts_now = support.queue_counts(vhost, broker_url)
            busy = {name: counts for name, counts in counts_now.items() if counts != (0, 0)}
            left = {"outbox": outbox, **busy}
            quiet = quiet + 1 if outbox == 0 and not busy else 0
            if quiet >= 2:
                return True
            total = outbox + sum(ready + unacked for ready, unacked in busy.values())
            if least is None or total < least:
                least, last_progress = total, time.monotonic()
            time.sleep(2)
    finally:
        engine.dispose()
    return f"after {time.monotonic() - started:.0f}s: {left}"


def check_all(database_url: str, broker_url: str, vhost: str, sink: Path, *, ledger, students: int,
              mailer_kills: list[float], drained: bool | str, runner_finished: bool) -> dict:
    """Every invariant; ``mailer_kills`` are the ``time.monotonic()`` instants the mailer was SIGKILLed."""
    violations: list[str] = []
    figures: dict = {}
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection, connection.begin():
            connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))  # one snapshot for all
            _runs(connection, ledger, students, runner_finished, violations, figures)
            _failed_jobs(connection, violations, figures)
            sent = _emails(connection, violations, figures)
            _seats(connection, ledger, violations, figures)
            outbox = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    finally:
        engine.dispose()
    _sink(sink, sent, mailer_kills, violations, figures)
    if drained is not True:
        violations.append(f"messages left in flight: {drained}")
    if outbox:
        violations.append(f"the outbox still holds {outbox} rows")
    left = {name: counts for name, counts in support.queue_counts(vhost, broker_url).items() if counts != (0, 0)}
    figures["queues_left"] = left
    return {"violations": violations, "figures": figures}


def _add(violations: list[str], what: str, examples: list) -> None:
    if examples:
        shown = ", ".join(str(example) for example in examples[:EXAMPLES])
        violations.append(f"{what}: {len(examples)} ({shown}{', ...' if len(examples) > EXAMPLES else ''})")


def _runs(connection, ledger, students: int, runner_finished: bool, violations: list[str], figures: dict) -> None:
    rows = connection.execute(text(
        """SELECT r.id, r.status, r.total,
                  (SELECT coalesce(sum(c.processed), 0) FROM sync_run_counts c WHERE c.run_id = r.id) AS processed,
                  (SELECT coalesce(sum(c.failed), 0) FROM sync_run_counts c WHERE c.run_id = r.id) AS failed,
                  (SELECT coalesce(sum(c.total), 0) FROM sync_run_counts c WHERE c.run_id = r.id) AS shard_total,
                  (SELECT count(*) FROM sync_items i WHERE i.run_id = r.id) AS items,
                  (SELECT count(*) FROM sync_items i WHERE i.run_id = r.id AND i.status <> 'pending') AS done,
                  (SELECT count(*) FROM sync_items i WHERE i.run_id = r.id AND i.status = 'failed') AS failed_items,
                  extract(epoch FROM r.finished_at - r.started_at) AS seconds
           FROM sync_runs r ORDER BY r.id"""
    )).mappings().all()
    wrong: dict[str, list] = defaultdict(list)
    for run in rows:
        if run["status"] != "finished":
            wrong["run not finished"].append(f"run {run['id']} {run['status']}")
            continue
        if run["total"] != students:
            wrong["run total is not the number of students"].append(f"run {run['id']}: {run['total']}")
        if not run["items"] == run["shard_total"] == run["total"]:
            wrong["items, shards' total and total differ"].append(
                f"run {run['id']}: {run['items']}/{run['shard_total']}/{run['total']}")
        if not run["processed"] == run["done"] == run["total"]:
            wrong["processed is not total (or not the items with an outcome)"].append(
                f"run {run['id']}: processed {run['processed']}, outcomes {run['done']}, total {run['total']}")
        if run["failed"] != run["failed_items"]:
            wrong["failed count is not the failed items"].append(
                f"run {run['id']}: {run['failed']} vs {run['failed_items']}")
    for run in ledger.runs:  # what the API answered when the run ended
        if run.get("status") == "finished" and run.get("processed") != run.get("total"):
            wrong["the API answered processed != total"].append(f"run {run['id']}: {run.get('processed')}/"
                                                               f"{run.get('total')}")
    for what, examples in wrong.items():
        _add(violations, what, examples)
    if not runner_finished:
        violations.append("the last sync run was still going after the drain timeout")
    finished = [run for run in rows if run["status"] == "finished"]
    figures["runs"] = {"finished": len(finished), "all": len(rows),
                       "seconds_median": sorted(float(r["seconds"]) for r in finished)[len(finished) // 2]
                       if finished else None,
                       "failed_students_per_run": sorted({r["failed_items"] for r in finished})}


def _failed_jobs(connection, violations: list[str], figures: dict) -> None:
    jobs = connection.execute(text("SELECT id, actor_name, args, exception FROM failed_jobs")).mappings().all()
    by_actor = Counter(job["actor_name"] for job in jobs)
    figures["failed_jobs"] = dict(by_actor)
    stored = Counter((int(job["args"][1]), int(job["args"][0])) for job in jobs
                     if job["actor_name"] == "sync_student_payment")
    failed = {(row.run_id, row.idperson) for row in connection.execute(
        text("SELECT run_id, idperson FROM sync_items WHERE status = 'failed'"))}
    _add(violations, "failed students without their failed job (a message lost)",
         [f"run {run} student {idperson}" for run, idperson in sorted(failed - set(stored))])
    _add(violations, "failed jobs of students not failed",
         [f"run {run} student {idperson}" for run, idperson in sorted(set(stored) - failed)])
    _add(violations, "a student's failed job stored twice",
         [f"run {run} student {idperson}" for (run, idperson), count in sorted(stored.items()) if count > 1])
    _add(violations, "failed jobs of other actors",
         [f"{job['actor_name']} #{job['id']}: {job['exception'][:120]}" for job in jobs
          if job["actor_name"] != "sync_student_payment"])


def _emails(connection, violations: list[str], figures: dict) -> dict[str, str]:
    """The checks on ``email_deliveries``; returns each sent email's Message-ID → ``kind booking_id``."""
    deliveries = connection.execute(text(
        "SELECT d.booking_id, d.kind, d.status, d.message_id, d.last_error, b.status AS booking_status "
        "FROM email_deliveries d JOIN bookings b ON b.id = d.booking_id"
    )).mappings().all()
    figures["email_deliveries"] = dict(Counter(f"{row['kind']} {row['status']}" for row in deliveries))
    _add(violations, "emails not sent (delivery rows pending or failed)",
         [f"{row['kind']} of booking {row['booking_id']} {row['status']}: {row['last_error']}" for row in deliveries
          if row["status"] != "sent"])
    sent = {(row["booking_id"], row["kind"]) for row in deliveries if row["status"] == "sent"}
    bookings = connection.execute(text("SELECT id, status FROM bookings")).all()
    _add(violations, "pending bookings without their invoice",
         [booking.id for booking in bookings if booking.status == "pending" and (booking.id, "invoice") not in sent])
    _add(violations, "paid bookings without their e-ticket",
         [booking.id for booking in bookings if booking.status == "paid" and (booking.id, "eticket") not in sent])
    figures["invoices_outdated"] = sum(1 for booking in bookings if (booking.id, "invoice") not in sent
                                       and booking.status != "pending")
    return {row["message_id"]: f"{row['kind']} {row['booking_id']}" for row in deliveries if row["status"] == "sent"}


def _seats(connection, ledger, violations: list[str], figures: dict) -> None:
    tours = connection.execute(text(
        """SELECT t.id, t.quota,
                  coalesce(sum(b.quantity) FILTER (WHERE b.status IN ('pending', 'paid')), 0) AS held
           FROM tours t LEFT JOIN bookings b ON b.tour_id = t.id GROUP BY t.id ORDER BY t.id"""
    )).all()
    _add(violations, "tours whose seats do not add up (made with != quota + pending and paid seats)",
         [f"tour {tour.id}: {ledger.tours.get(tour.id)} != {tour.quota} + {tour.held}" for tour in tours
          if ledger.tours.get(tour.id) != tour.quota + tour.held])
    statuses = dict(connection.execute(text("SELECT id, status FROM bookings")).all())
    figures["bookings"] = dict(Counter(statuses.values()))
    figures["tours"] = len(tours)
    _add(violations, "bookings answered 201 but missing", sorted(set(ledger.bookings) - set(statuses)))
    figures["bookings_not_answered"] = len(set(statuses) - set(ledger.bookings))  # a client timeout, not a loss
    codes = {booking["code"]: booking_id for booking_id, booking in ledger.bookings.items()}
    _add(violations, "bookings answered paid but not paid",
         [f"{code} is {statuses.get(codes.get(code))}" for code, answer in sorted(ledger.payments.items())
          if answer.get("status") == "paid" and statuses.get(codes.get(code)) != "paid"])
    figures["payment_outcomes"] = dict(Counter(answer.get("outcome") for answer in ledger.payments.values()))


def _sink(sink: Path, sent: dict[str, str], mailer_kills: list[float], violations: list[str], figures: dict) -> None:
    """The mail sink's files against the deliveries marked sent: each once, none missing, none extra."""
    copies: dict[str, list[float]] = defaultdict(list)
    parser = BytesHeaderParser(policy=policy.default)
    unreadable = 0
    offset = time.time() - time.monotonic()  # file times are wall-clock times
    for path in sink.glob("*.eml"):
        with path.open("rb") as file:
            head = file.read(HEADER_BYTES)
        message_id = str(parser.parsebytes(head).get("Message-ID", "")).strip()
        if not message_id:
            unreadable += 1
            continue
        copies[message_id].append(path.stat().st_mtime - offset)
    in_window = []
    duplicates = []
    for message_id, times in copies.items():
        if len(times) < 2:
            continue
        first = min(times)
        if _near_a_kill(first, mailer_kills):
            in_window.append(message_id)
        else:
            duplicates.append(f"{message_id} x{len(times)}")
    unrecorded = []
    for message_id in set(copies) - set(sent):  # sent, then SIGKILLed before the commit, then outdated
        if _near_a_kill(min(copies[message_id]), mailer_kills):
            in_window.append(message_id)
        else:
            unrecorded.append(message_id)
    figures["sink_messages"] = sum(len(times) for times in copies.values())
    figures["sink_in_the_documented_window"] = sorted(in_window)
    _add(violations, "emails received more than once", sorted(duplicates))
    _add(violations, "emails marked sent but never received (lost)", sorted(set(sent) - set(copies)))
    _add(violations, "emails received but not marked sent", sorted(unrecorded))
    if unreadable:
        violations.append(f"{unreadable} messages in the mail sink without a Message-ID")


def _near_a_kill(received: float, kills: list[float]) -> bool:
    return any(-KILL_LAG_S <= kill - received <= KILL_WINDOW_S for kill in kills)
