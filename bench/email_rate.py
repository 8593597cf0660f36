"""Part (f): invoice emails per second that the real mailer delivers to a local SMTP server.

N bookings are inserted with one SQL statement and N ``send_invoice_email`` messages published
with the ConfirmedPublisher into ``emails`` (declared first as Dramatiq declares it), then
``mailer --processes P --threads T`` starts on the full queue. The rate spans the first to the
last email the sink (``python -m bench.smtp_sink``, a process of its own) received.

Baseline, the SMTP floor: the bench process renders the same invoices as the mailer does (``render_raw``,
timed apart) and sends those very bytes with ``sendmail`` over one reused smtplib connection to a fresh
sink: no queue, no database, no NOOP check.

Checks: the sink got exactly N emails with N distinct Message-IDs, email_deliveries holds N
invoice rows marked sent, and nothing is left in ``emails`` or dead-lettered.
"""

from __future__ import annotations

import smtplib
import time

from sqlalchemy import Engine, text

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.amqp.queue_types import TypedRabbitmqBroker
from antrian.config import Settings
from antrian.messages import EMAILS_QUEUE, SEND_INVOICE_EMAIL

from . import common, probes

PUBLISH_BATCH = 2000

_INSERT = text(
    """WITH tour AS (
           INSERT INTO tours (name, quota, price, starts_at)
           VALUES ('Bench email tour', 0, 150000, now() + interval '30 days') RETURNING id, price)
       INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, expires_at)
       SELECT 'BNCH-' || lpad(n::text, 6, '0'), tour.id, 'Bench Customer ' || n,
              'customer' || n || '@example.com', 1, tour.price, now() + interval '30 minutes'
       FROM tour, generate_series(1, :n) AS n
       RETURNING id"""
)


def run(engine: Engine, *, emails: int, processes: int, threads: int) -> dict:
    common.clear_bookings(engine)
    try:
        booking_ids = _insert_bookings(engine, emails)
        floor = _smtp_floor(engine, booking_ids)
        common.log(f"(f) SMTP floor: {floor['rate_per_s']:.0f}/s over one connection;"
                   f" rendering {floor['render_ms']} ms per email")
        mailer = _mailer(engine, booking_ids, processes=processes, threads=threads)
    finally:
        common.stop_all()
        common.clear_bookings(engine)
    common.log(f"(f) mailer {processes}x{threads}: {mailer['rate_per_s']:.0f}/s")
    common.log(f"(f) mailer / floor {mailer['rate_per_s'] / floor['rate_per_s']:.2f}; mailer / the EmailMessage"
               f" floor ({floor['email_message']['rate_per_s']:.0f}/s)"
               f" {mailer['rate_per_s'] / floor['email_message']['rate_per_s']:.2f}")
    return {"emails": emails, "processes": processes, "threads": threads, "mailer": mailer, "floor": floor,
            "ratio": round(mailer["rate_per_s"] / floor["rate_per_s"], 3),
            "ratio_email_message": round(mailer["rate_per_s"] / floor["email_message"]["rate_per_s"], 3)}


def _insert_bookings(engine: Engine, count: int) -> list[int]:
    started = time.perf_counter()
    with engine.begin() as connection:
        ids = list(connection.execute(_INSERT, {"n": count}).scalars())
    common.vacuum(engine, "tours", "bookings", "email_deliveries")
    common.log(f"(f) inserted {count} bookings in {time.perf_counter() - started:.1f}s")
    return ids


def _details(engine: Engine, booking_ids: list[int]):
    """The bookings as the mailer loads them (mailer.emails.bookings.BookingDetails)."""
    from mailer.emails.bookings import BookingDetails

    with engine.connect() as connection:
        rows = connection.execute(
            text("""SELECT b.id, b.code, b.status, b.customer_name, b.customer_email, b.quantity, b.total_amount,
                           b.expires_at, t.name AS tour_name, t.starts_at AS tour_starts_at
                    FROM bookings b JOIN tours t ON t.id = b.tour_id WHERE b.id = ANY(:ids) ORDER BY b.id"""),
            {"ids": booking_ids},
        ).all()
    return [BookingDetails(**row._asdict()) for row in rows]


def _smtp_floor(engine: Engine, booking_ids: list[int]) -> dict:
    """Render every invoice as the mailer does (MIME bytes), then send them all over one smtplib connection."""
    from mailer.emails.render import INVOICE, Sender, message_id_for, render_raw
    from mailer.transport import RawEmail

    settings = Settings()
    sender = Sender(settings.mail_from_address, settings.mail_from_name)
    bookings = _details(engine, booking_ids)
    started = time.perf_counter()
    rendered = [render_raw(INVOICE, b, sender, message_id=message_id_for(INVOICE, b.code, sender)) for b in bookings]
    render_s = time.perf_counter() - started
    messages = [message for message in rendered if isinstance(message, RawEmail)]
    if len(messages) != len(rendered):
        raise RuntimeError("the bench's invoices should all take the mailer's fast rendering path")
    size = len(bytes(messages[0]))
    port, stats_url = common.start_smtp_sink()
    common.log(f"(f) SMTP floor: {len(messages)} rendered invoices over one smtplib connection")
    with probes.CpuMeter() as cpu:
        started = time.perf_counter()
        connection = smtplib.SMTP("127.0.0.1", port, timeout=30)
        for message in messages:
            connection.sendmail(message.envelope_from, list(message.recipients), message.data)
        connection.quit()
        send_s = time.perf_counter() - started
    stats = common.sink_stats(stats_url)
    common.stop_all()
    if stats["count"] != len(messages) or stats["duplicates"]:
        raise RuntimeError(f"the sink counted {stats['count']} emails ({stats['duplicates']} duplicates)"
                           f" of {len(messages)} sent")
    window = stats["last"] - stats["first"]
    return {"emails": len(messages), "message_bytes": size, "render_ms": round(render_s * 1000 / len(messages), 2),
            "send_s": round(send_s, 2), "window_s": round(window, 2), "rate_per_s": round(len(messages) / window, 1),
            "email_message": _email_message_floor(bookings, sender), **cpu.report()}


def _email_message_floor(bookings, sender) -> dict:
    """The floor as it was before the mailer sent ready-made bytes: ``render`` (the email package's EmailMessage)
    and ``send_message`` (which flattens it) over one connection; for comparison with earlier runs only."""
    from mailer.emails.render import INVOICE, message_id_for, render

    started = time.perf_counter()
    messages = [render(INVOICE, b, sender, message_id=message_id_for(INVOICE, b.code, sender)) for b in bookings]
    render_s = time.perf_counter() - started
    port, stats_url = common.start_smtp_sink()
    connection = smtplib.SMTP("127.0.0.1", port, timeout=30)
    for message in messages:
        connection.send_message(message)
    connection.quit()
    stats = common.sink_stats(stats_url)
    common.stop_all()
    window = stats["last"] - stats["first"]
    return {"render_ms": round(render_s * 1000 / len(messages), 2), "rate_per_s": round(len(messages) / window, 1)}


def _mailer(engine: Engine, booking_ids: list[int], *, processes: int, threads: int) -> dict:
    count = len(booking_ids)
    common.purge_queues(common.EMAIL_QUEUES)
    _declare_emails_queue()
    bodies = [SEND_INVOICE_EMAIL.encode(booking_id) for booking_id in booking_ids]
    with ConfirmedPublisher(common.BROKER_URL) as publisher:
        for start in range(0, count, PUBLISH_BATCH):
            publisher.publish_batch(EMAILS_QUEUE, bodies[start:start + PUBLISH_BATCH])
    depth = common.queue_depth(EMAILS_QUEUE)
    if depth != count:
        raise RuntimeError(f"{EMAILS_QUEUE} holds {depth} messages after publishing {count}")
    port, stats_url = common.start_smtp_sink()
    common.log(f"(f) mailer {processes}x{threads}: {count} invoices waiting in {EMAILS_QUEUE}")
    started = time.perf_counter()
    service = common.start_mailer(port, processes=processes, threads=threads)
    boot_s = time.perf_counter() - started
    at_enter = common.sink_stats(stats_url)["count"]
    with probes.CpuMeter() as cpu, probes.DbActivitySampler(engine) as db:
        common.wait_until(lambda: common.sink_stats(stats_url)["count"] >= count, timeout=60 + count / 20,
                          interval=0.1, what=f"{count} emails at the sink")
    common.wait_until(lambda: _sent(engine) >= count, timeout=15, what="every delivery marked sent")
    time.sleep(1.0)  # anything sent twice would arrive about now
    stats = common.sink_stats(stats_url)
    leftover = {queue: common.queue_depth(queue) for queue in common.EMAIL_QUEUES}
    service.stop()
    with engine.connect() as connection:
        deliveries = dict(connection.execute(
            text("SELECT kind || ' ' || status, count(*) FROM email_deliveries GROUP BY 1")).all())
    window = stats["last"] - stats["first"]
    checks = {"sink_count": stats["count"], "distinct_message_ids": stats["distinct_message_ids"],
              "duplicates": stats["duplicates"], "deliveries": deliveries,
              "left_in_queues": leftover}
    checks["ok"] = (stats["count"] == stats["distinct_message_ids"] == count and not stats["duplicates"]
                    and deliveries == {"invoice sent": count} and not any(leftover.values()))
    measured = count - at_enter
    return {"emails": count, "boot_s": round(boot_s, 1), "window_s": round(window, 2),
            "rate_per_s": round(count / window, 1), "smtp_connections": stats["connections"],
            "emails_during_cpu_meter": measured, "checks": checks, "db_sessions": db.report(), **cpu.report()}


def _declare_emails_queue() -> None:
    """Declare ``emails`` (with its delay and dead-letter queues) exactly as the mailer's Dramatiq broker does."""
    broker = TypedRabbitmqBroker(url=common.BROKER_URL, middleware=[])  # QUEUE_TYPE's default: quorum
    try:
        broker.declare_queue(EMAILS_QUEUE, ensure=True)
    finally:
        broker.close()


def _sent(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM email_deliveries WHERE status = 'sent'")).scalar_one()
