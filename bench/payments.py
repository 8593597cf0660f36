"""Part (i): payments. A notification asks the gateway's status API before it is applied; reconciliation asks in bulk.

1. Notifications through a real sync-api (its defaults: gunicorn, 2 workers x 8 threads), its
   ``PAYMENT_API_BASE_URL`` pointing at the development gateway (``dev/payment_gateway.py``, a process of
   its own) answering every status request after 50 ms. ``notifications`` pending bookings are inserted
   by SQL and a settlement recorded for each at the gateway; then one signed notification per booking
   is posted by ``concurrency`` client threads of this process, each sending its next request when its
   last was answered (a closed loop), and each request's latency is recorded. The floor, with the same
   client and concurrency: ``GET /healthz`` of the same sync-api, and the gateway's status request
   asked directly (a new connection each, as sync-api makes one per notification, and kept alive).
   Afterwards every booking must be paid with exactly one ``payments`` row, and ``emails`` must hold one
   ``send_eticket_email`` per booking (sync-api's relay publishes the outbox).
2. Reconciliation of ``bookings`` pending bookings created two hours ago, a settlement recorded for each
   at a gateway answering in 20 ms and enforcing ``rate_limit`` status requests a second (beyond it: 429,
   ``Retry-After: 1``): ``reconcile(engine, StatusApi(...))`` is timed in this process with its defaults
   (16 in flight, at most 400/s), on an engine made as the booking-expiry worker makes it (pool of 2,
   overflow 30: a 3rd to 16th thread's connection is opened for its transaction and closed after it).
   The floor is the gateway's limit: ``bookings / rate_limit`` seconds. Afterwards every booking must be
   paid with exactly one ``payments`` row and one ``send_eticket_email`` outbox row (no relay runs). Then
   the same on data regenerated, with a pool of 16 (one connection per thread), for information.

Any count that is off raises: the part fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import Engine, text

from antrian.bookings.payments import STATUS_CODES
from antrian.messages import SEND_ETICKET_EMAIL
from tests import support

from . import common, probes

SERVER_KEY = "bench-payment-server-key"
PRICE = "150000.00"
#: The gateway's latency for notifications, and for reconciliation (with its rate limit).
NOTIFY_GATEWAY_MS, RECONCILE_GATEWAY_MS = 50.0, 20.0
#: Notifications posted (and not measured) first: each gunicorn thread opens its connections on its first request.
WARMUP = 64
#: Requests of the direct gateway floor; seconds any one load may take at most.
GATEWAY_SAMPLES, LOAD_BUDGET_S = 400, 600
#: Reconciling 10,000 bookings should take under 60 s: at least this many orders a second.
RECONCILE_TARGET_PER_S = 10_000 / 60

SEED = text(
    """WITH tour AS (
           INSERT INTO tours (name, quota, price, starts_at)
           VALUES ('Bench payments tour', 1000000 - :count, CAST(:price AS numeric), now() + interval '60 days')
           RETURNING id, price)
       INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, status,
                             created_at, expires_at)
       SELECT CAST(:prefix AS text) || '-' || lpad(g::text, 7, '0'), tour.id, 'Bench ' || g,
              'bench' || g || '@example.com', 1, tour.price, 'pending',
              now() - CAST(:age AS interval), now() + interval '30 minutes'
       FROM tour, generate_series(1, :count) AS g
       RETURNING id, code"""
)


def run(engine: Engine, *, notifications: int, bookings: int, concurrency: int = 8, rate_limit: int = 500) -> dict:
    common.clear_bookings(engine)
    try:
        notified = _notifications(engine, count=notifications, concurrency=concurrency)
    finally:
        common.stop_all()
        common.clear_bookings(engine)
    try:
        reconciled = _reconciliation(engine, count=bookings, rate_limit=rate_limit)
    finally:
        common.stop_all()
        common.clear_bookings(engine)
    return {"notifications": notified, "reconcile": reconciled}


# --------------------------------------------------------------------------- 1. notifications


def _notifications(engine: Engine, *, count: int, concurrency: int) -> dict:
    gateway = _start_gateway(latency_ms=NOTIFY_GATEWAY_MS)
    web = common.start_sync_api(PAYMENT_SERVER_KEY=SERVER_KEY, PAYMENT_API_BASE_URL=gateway)
    booked = _seed(engine, count + WARMUP, age="0 minutes")
    _record_settlements(gateway, [code for _, code in booked])
    bodies = [_notification(code) for _, code in booked]
    url = f"{web}/api/payments/notification"

    common.log(f"(i) warm-up: {WARMUP} notifications, GET /healthz")
    warmup = closed_loop(lambda s, body: s.post(url, json=body, timeout=30), bodies[:WARMUP],
                         concurrency=concurrency)
    closed_loop(lambda s, _: s.get(f"{web}/healthz", timeout=30), range(4 * concurrency), concurrency=concurrency)
    if set(warmup["status_codes"]) != {"200"}:
        raise AssertionError(f"warm-up notifications answered {warmup['status_codes']}")

    common.log(f"(i) GET /healthz x {count}, {concurrency} at a time")
    healthz = closed_loop(lambda s, _: s.get(f"{web}/healthz", timeout=30), range(count), concurrency=concurrency)
    common.log(f"(i) the gateway's status request asked directly x {GATEWAY_SAMPLES}, {concurrency} at a time")
    status_url = f"{gateway}/v2/{booked[0][1]}/status"
    auth = (SERVER_KEY, "")
    direct_new = closed_loop(lambda s, _: requests.get(status_url, auth=auth, timeout=30),
                             range(GATEWAY_SAMPLES), concurrency=concurrency)
    direct_kept = closed_loop(lambda s, _: s.get(status_url, auth=auth, timeout=30), range(GATEWAY_SAMPLES),
                              concurrency=concurrency)
    before = _gateway_stats(gateway)

    common.log(f"(i) {count} notifications, {concurrency} at a time, gateway {NOTIFY_GATEWAY_MS:g} ms")
    with probes.CpuMeter() as cpu, probes.DbActivitySampler(engine, interval=0.25) as db:
        posted = closed_loop(lambda s, body: s.post(url, json=body, timeout=30), bodies[WARMUP:],
                             concurrency=concurrency, check=_paid_answer)
    after = _gateway_stats(gateway)
    posted.update(cpu.report(), db_sessions=db.report())

    checks = _check_paid(engine, [booking_id for booking_id, _ in booked])
    common.wait_until(lambda: _outbox(engine) == 0, timeout=60, interval=0.05, what="an empty outbox")
    checks["etickets_queued"] = _etickets_queued(booked)
    own_ms = posted["p50_ms"] - NOTIFY_GATEWAY_MS
    result = {
        "count": count, "concurrency": concurrency, "gateway_latency_ms": NOTIFY_GATEWAY_MS,
        "notifications": posted, "healthz": healthz, "gateway_direct_new_connection": direct_new,
        "gateway_direct_kept_alive": direct_kept,
        "gateway_status_requests": after["status_requests"] - before["status_requests"],
        "own_p50_ms": round(own_ms, 1), "own_p50_over_healthz_p50": round(own_ms / healthz["p50_ms"], 1),
        "own_p50_over_direct_ms": round(posted["p50_ms"] - direct_new["p50_ms"], 1),
        "ratio_p50": round(posted["p50_ms"] / healthz["p50_ms"], 1),
        "ratio_p99": round(posted["p99_ms"] / healthz["p99_ms"], 1),
        "checks": checks,
    }
    if result["gateway_status_requests"] != count:
        raise AssertionError(f"{count} notifications asked the gateway {result['gateway_status_requests']} times")
    common.log(f"(i) notifications p50 {posted['p50_ms']} ms, p99 {posted['p99_ms']} ms; healthz p50"
               f" {healthz['p50_ms']} ms, p99 {healthz['p99_ms']} ms; own p50 {result['own_p50_ms']} ms ="
               f" {result['own_p50_over_healthz_p50']}x healthz p50")
    return result


def _notification(code: str) -> dict:
    """A settlement's notification as the gateway signs it (tests/sync_api/bookings/helpers.py ``notification``)."""
    status_code = STATUS_CODES["settlement"]
    signature = hashlib.sha512(f"{code}{status_code}{PRICE}{SERVER_KEY}".encode()).hexdigest()
    return {"order_id": code, "status_code": status_code, "gross_amount": PRICE, "signature_key": signature,
            "transaction_status": "settlement", "transaction_id": f"tx-{code}", "fraud_status": "accept",
            "payment_type": "bank_transfer"}


def _paid_answer(response: requests.Response) -> str | None:
    """What is wrong with a notification's answer (None: it paid its booking)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    body = response.json()
    if body.get("outcome") != "paid" or body.get("duplicate"):
        return f"outcome {body.get('outcome')!r}, duplicate {body.get('duplicate')!r}"
    return None


def closed_loop(send, items, *, concurrency: int, check=None, budget_s: float = LOAD_BUDGET_S) -> dict:
    """``send(session, item)`` for every item, ``concurrency`` at a time, each thread sending its next request
    when its last was answered; the latency percentiles (nearest rank) in ms and the answers by status.
    ``check(response)`` names what is wrong with an answer (None: nothing); more than ``budget_s`` raises."""
    items = iter(list(items))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    deadline = time.monotonic() + budget_s

    def worker() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while time.monotonic() < deadline:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                started = time.perf_counter()
                response = send(session, item)
                elapsed = time.perf_counter() - started
                problem = check(response) if check else None
                with lock:
                    latencies.append(elapsed * 1000)
                    statuses[str(response.status_code)] += 1
                    if problem:
                        problems.append(problem)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-client") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - started
    if next(items, None) is not None:
        raise RuntimeError(f"the load ran over its {budget_s}s budget after {len(latencies)} requests")
    if problems:
        raise AssertionError(f"{len(problems)} answers were wrong, the first: {problems[0]}")
    latencies.sort()
    result = {f"p{p}_ms": round(latencies[max(math.ceil(p / 100 * len(latencies)) - 1, 0)], 1)
              for p in (50, 90, 99)}
    result.update(max_ms=round(latencies[-1], 1), requests=len(latencies), seconds=round(wall, 2),
                  rate_per_s=round(len(latencies) / wall, 1), status_codes=dict(sorted(statuses.items())))
    return result


# --------------------------------------------------------------------------- 2. reconciliation


def _reconciliation(engine: Engine, *, count: int, rate_limit: int) -> dict:
    """Timed on the worker's engine (pool of 2), then again on data regenerated, with one connection per thread."""
    from antrian.bookings import reconcile

    gateway = _start_gateway(latency_ms=RECONCILE_GATEWAY_MS, rate_limit=rate_limit)
    worker = _timed_reconcile(engine, gateway, count=count, pool_size=WORKER_POOL_SIZE)
    common.clear_bookings(engine)
    pooled = _timed_reconcile(engine, gateway, count=count, pool_size=reconcile.CONCURRENCY)
    floor_s = count / rate_limit
    result = {
        "bookings": count, "gateway_latency_ms": RECONCILE_GATEWAY_MS, "rate_limit_per_s": rate_limit,
        "concurrency": reconcile.CONCURRENCY, "pace_per_s": reconcile.RATE_PER_S, "floor_s": round(floor_s, 2),
        "pace_bound_s": round(count / reconcile.RATE_PER_S, 2),
        "target_s": round(count / RECONCILE_TARGET_PER_S, 1), **worker,
        "ratio": round(worker["seconds"] / floor_s, 2),
        "pool_of_concurrency": {**pooled, "ratio": round(pooled["seconds"] / floor_s, 2)},
    }
    common.log(f"(i) reconciled {count} in {worker['seconds']}s ({worker['per_s']}/s), {worker['rate_limited']}"
               f" 429s: {result['ratio']}x the gateway limit's {result['floor_s']}s; with a pool of"
               f" {reconcile.CONCURRENCY}: {pooled['seconds']}s")
    return result


#: The booking-expiry worker's pool (antrian.config.DEFAULT_DB_POOL_SIZES; overflow 30 beyond it).
WORKER_POOL_SIZE = 2


def _timed_reconcile(engine: Engine, gateway: str, *, count: int, pool_size: int) -> dict:
    """``count`` pending bookings, settled at the gateway; ``reconcile()`` timed on an engine made as the
    booking-expiry worker makes it (``booking_expiry.bookings.actors``) with a pool of ``pool_size``."""
    from antrian.bookings import reconcile
    from antrian.bookings.gateway import StatusApi
    from antrian.db.engine import make_engine

    booked = _seed(engine, count, age="2 hours")
    _record_settlements(gateway, [code for _, code in booked])
    common.vacuum(engine, "bookings")
    worker_engine = make_engine(common.DATABASE_URL, pool_size=pool_size)
    try:
        with worker_engine.connect():
            pass
        before = _gateway_stats(gateway)
        common.log(f"(i) reconcile() of {count} pending bookings, pool {pool_size}, gateway"
                   f" {RECONCILE_GATEWAY_MS:g} ms")
        with probes.CpuMeter() as cpu, probes.DbActivitySampler(engine, interval=0.25) as db:
            started = time.perf_counter()
            done = reconcile.reconcile(worker_engine, StatusApi(base_url=gateway, server_key=SERVER_KEY))
            wall = time.perf_counter() - started
    finally:
        worker_engine.dispose()
    after = _gateway_stats(gateway)
    if done.asked != count or dict(done.outcomes) != {"paid": count} or done.unknown or done.deferred:
        raise AssertionError(f"reconcile asked {done.asked} of {count}: {dict(done.outcomes)}, {done.unknown}"
                             f" unknown, {done.deferred} deferred")
    checks = _check_paid(engine, [booking_id for booking_id, _ in booked])
    checks["eticket_outbox_rows"] = _eticket_outbox_rows(engine, booked)
    return {"pool_size": pool_size, "seconds": round(wall, 2), "per_s": round(count / wall, 1),
            "status_requests": after["status_requests"] - before["status_requests"],
            "rate_limited": after["rate_limited"] - before["rate_limited"], "outcomes": dict(done.outcomes),
            **cpu.report(), "db_sessions": db.report(), "checks": checks}


# --------------------------------------------------------------------------- shared


def _start_gateway(*, latency_ms: float, rate_limit: int | None = None) -> str:
    """``dev/payment_gateway.py`` in a process of its own; returns its base URL."""
    port = common.free_port()
    argv = [str(common.BIN / "python"), str(common.ROOT / "dev" / "payment_gateway.py"), "--host", "127.0.0.1",
            "--port", str(port), "--server-key", SERVER_KEY, "--latency-ms", str(latency_ms)]
    if rate_limit is not None:
        argv += ["--rate-limit", str(rate_limit)]
    common.Service(f"dev-payment-gateway-{port}", argv, common.base_env(),
                   ready_url=f"http://127.0.0.1:{port}/healthz").start()
    return f"http://127.0.0.1:{port}"


def _gateway_stats(gateway: str) -> dict:
    return requests.get(f"{gateway}/dev/stats", timeout=10).json()


def _seed(engine: Engine, count: int, *, age: str) -> list[tuple[int, str]]:
    """``count`` pending bookings of one seat each on a new tour, created ``age`` ago; their (id, code)."""
    with engine.begin() as connection:
        rows = connection.execute(SEED, {"count": count, "price": PRICE, "age": age,
                                         "prefix": secrets.token_hex(3).upper()}).all()
    if len(rows) != count:
        raise RuntimeError(f"seeded {len(rows)} bookings instead of {count}")
    return sorted((row.id, row.code) for row in rows)


def _record_settlements(gateway: str, codes: list[str]) -> None:
    """What the gateway knows from now on: each order settled in full (``POST /dev/orders/<code>``)."""
    started = time.perf_counter()
    closed_loop(lambda s, code: s.post(f"{gateway}/dev/orders/{code}", auth=(SERVER_KEY, ""), timeout=30, json={
        "transaction_status": "settlement", "fraud_status": "accept", "status_code": "200", "gross_amount": PRICE,
        "transaction_id": f"tx-{code}"}), codes, concurrency=4,
        check=lambda r: None if r.status_code == 200 else f"HTTP {r.status_code}")
    common.log(f"(i) recorded {len(codes)} settlements at the gateway in {time.perf_counter() - started:.1f}s")


def _check_paid(engine: Engine, booking_ids: list[int]) -> dict:
    """Every booking paid, with exactly one ``payments`` row (outcome paid); raises otherwise."""
    with engine.connect() as connection:
        row = connection.execute(text(
            """SELECT count(*) FILTER (WHERE b.status = 'paid' AND b.paid_at IS NOT NULL) AS paid,
                      count(*) FILTER (WHERE p.n = 1 AND p.paid = 1) AS one_payment,
                      (SELECT count(*) FROM payments) AS payments
               FROM bookings b
               LEFT JOIN (SELECT booking_id, count(*) AS n, count(*) FILTER (WHERE outcome = 'paid') AS paid
                          FROM payments GROUP BY booking_id) p ON p.booking_id = b.id
               WHERE b.id = ANY(:ids)"""
        ), {"ids": booking_ids}).one()
    count = len(booking_ids)
    result = {"bookings": count, "paid": row.paid, "one_payment_each": row.one_payment, "payments": row.payments}
    if not row.paid == row.one_payment == row.payments == count:
        raise AssertionError(f"not every booking paid exactly once: {result}")
    return result


def _outbox(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()


def _etickets_queued(booked: list[tuple[int, str]]) -> int:
    """Take every message off ``emails``: exactly one send_eticket_email per booking? Raises otherwise."""
    messages = support.take_messages("emails", common.BROKER_URL)
    return _exactly_one_each(booked, messages, "queued on emails")


def _eticket_outbox_rows(engine: Engine, booked: list[tuple[int, str]]) -> int:
    with engine.connect() as connection:
        bodies = connection.execute(text("SELECT body FROM outbox")).scalars().all()
    return _exactly_one_each(booked, [json.loads(bytes(body)) for body in bodies], "in the outbox")


def _exactly_one_each(booked: list[tuple[int, str]], messages: list[dict], where: str) -> int:
    etickets = Counter(m["args"][0] for m in messages if m.get("actor_name") == SEND_ETICKET_EMAIL.actor)
    ids = {booking_id for booking_id, _ in booked}
    if len(messages) != len(ids) or set(etickets) != ids or set(etickets.values()) != {1}:
        raise AssertionError(f"{len(messages)} messages {where}, e-tickets for {len(etickets)} bookings"
                             f" (of {len(ids)}), at most {max(etickets.values(), default=0)} for one")
    return len(messages)
