"""Part (e): POST /api/bookings latency under a steady 200 requests/s, against GET /healthz at the same rate.

The load comes from ``hey`` (scripts/ensure-load-tools.sh installs it) on loopback, 20 kept-alive
connections at 10 requests/s each. hey paces each connection with a ticker of its own, and the
tickers of one hey process start together: ``hey -c 20 -q 10`` sends its 20 requests within a
millisecond every 100 ms, bursts rather than a steady rate. So the measured load is "smooth":
20 hey processes of one connection each (``-c 1 -q 10``), started 5 ms apart, which spreads the
requests evenly; the burst shape of a single ``hey -c 20 -q 10`` is measured too, for information.
Every hey writes one CSV row per answered request; the percentiles are computed here.

sync-api runs with its own defaults (gunicorn, 2 workers x 8 threads, each worker relaying the
outbox). Every booking is for one tour (a popular tour: every transaction updates its row). Order:

1. ``GET /healthz`` in both shapes, for the same duration: the framework's floor;
2. a short warm-up of POSTs (each gunicorn thread opens its database connection on its first
   request), then the outbox drained and the ``emails`` queue purged;
3. the POSTs in both shapes, the outbox backlog sampled meanwhile, and after each the time until
   the outbox is empty; then a check that ``emails`` holds exactly one ``send_invoice_email`` per
   booking made.

hey does not send a connection's next request while one is outstanding (a tick that passes
meanwhile is dropped), and its CSV lists answered requests only: a slow spell or a request that
got no answer shows as fewer answered requests than ticks, which is reported.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter

import requests
from sqlalchemy import Engine, text

from antrian.messages import SEND_INVOICE_EMAIL
from tests import support

from . import common, probes

#: The API's own bound on a tour's quota; every request of the run must find a seat.
TOUR_QUOTA = 100_000
WARMUP_S = 3
BOOKING = {"quantity": 1, "customer_name": "Bench Customer", "customer_email": "bench@example.com"}


def run(engine: Engine, *, rate: int, seconds: int, concurrency: int) -> dict:
    hey = shutil.which("hey")
    if hey is None:
        raise RuntimeError("hey is not installed: run scripts/ensure-load-tools.sh (make bench does)")
    if rate % concurrency:
        raise ValueError(f"the rate {rate}/s must be a multiple of the concurrency {concurrency}")
    if rate * (2 * seconds + WARMUP_S) * 1.2 > TOUR_QUOTA:
        raise ValueError(f"{rate}/s for 2 x {seconds}s would run the tour's {TOUR_QUOTA} seats out")
    common.clear_bookings(engine)
    load = {"hey": hey, "rate": rate, "concurrency": concurrency}
    try:
        web = common.start_sync_api()
        body = json.dumps({"tour_id": create_tour(web), **BOOKING})
        healthz = {}
        for shape in SHAPES:
            common.log(f"(e) GET /healthz at {rate}/s for {seconds}s, {concurrency} connections, {shape}")
            healthz[shape] = Load(f"healthz-{shape}", f"{web}/healthz", shape=shape, seconds=seconds, **load).run()
        common.log(f"(e) warm-up: POST /api/bookings at {rate}/s for {WARMUP_S}s")
        warmup = Load("warmup", f"{web}/api/bookings", shape=SMOOTH, seconds=WARMUP_S, body=body, **load).run()
        _wait_outbox_empty(engine, timeout=30)
        common.purge_queues(common.EMAIL_QUEUES)
        before = _last_booking_id(engine)
        bookings = {}
        for shape in SHAPES:
            common.log(f"(e) POST /api/bookings at {rate}/s for {seconds}s, {concurrency} connections, {shape}")
            bookings[shape] = _measure(engine, Load(f"bookings-{shape}", f"{web}/api/bookings", shape=shape,
                                                    seconds=seconds, body=body, **load))
        invoices = _invoice_check(engine, before)
    finally:
        common.stop_all()
        common.clear_bookings(engine)
    for shape in SHAPES:
        post, health = bookings[shape], healthz[shape]
        post["ratio_p50"] = round(post["p50_ms"] / health["p50_ms"], 2)
        post["ratio_p99"] = round(post["p99_ms"] / health["p99_ms"], 2)
    smooth = bookings[SMOOTH]
    common.log(f"(e) POST p50 {smooth['p50_ms']} ms, p99 {smooth['p99_ms']} ms, {smooth['status_codes']};"
               f" healthz p50 {healthz[SMOOTH]['p50_ms']} ms; outbox empty {smooth['outbox_empty_after_s']}s after")
    return {"rate": rate, "seconds": seconds, "concurrency": concurrency, "warmup_answered": warmup["answered"],
            "bookings": bookings, "healthz": healthz, "invoices": invoices}


def _measure(engine: Engine, load: Load) -> dict:
    """One POST load with the outbox, CPU and database sessions sampled; then the time the outbox took to empty."""
    before = _last_booking_id(engine)
    with _OutboxSampler(engine) as backlog:
        load.start()
        # Entered after hey started, so that CpuMeter names hey's CPU.
        with probes.CpuMeter() as cpu, probes.DbActivitySampler(engine, interval=0.1) as db:
            figures = load.finish()
    drain_s = _wait_outbox_empty(engine, timeout=60, since=time.perf_counter())
    made = len(_bookings_since(engine, before))
    return {**figures, "bookings_made": made, "non_201": figures["answered"] - figures["status_codes"].get("201", 0),
            "outbox_max_during_load": backlog.max, "outbox_mean_during_load": backlog.mean,
            "outbox_empty_after_s": drain_s, **cpu.report(), "db_sessions": db.report()}


def create_tour(web: str, name: str = "Bench tour") -> int:
    """A tour through ``POST /api/tours`` with seats for every booking of a run (TOUR_QUOTA); returns its id."""
    response = requests.post(f"{web}/api/tours", headers=common.AUTH, timeout=10, json={
        "name": name, "quota": TOUR_QUOTA, "price": "150000", "starts_at": "2027-01-15T08:00:00+07:00"})
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/tours answered {response.status_code}: {response.text[:300]}")
    return response.json()["id"]


SMOOTH, BURSTS = "smooth", "bursts"
SHAPES = (SMOOTH, BURSTS)


class Load:
    """``rate`` requests/s for ``seconds`` over ``concurrency`` connections, by hey processes (registered, so
    that CpuMeter names their CPU and stop_all ends them).

    ``smooth``: one hey per connection (``-c 1``), started ``1/rate`` s apart, so the requests are spread
    evenly; ``bursts``: one ``hey -c concurrency``, whose connections all fire on the same tick.
    """

    def __init__(self, label: str, url: str, *, hey: str, rate: int, seconds: int, concurrency: int, shape: str,
                 body: str | None = None) -> None:
        self.label, self.url, self.shape = label, url, shape
        self.rate, self.seconds, self.concurrency = rate, seconds, concurrency
        self.argv = [hey, "-z", f"{seconds}s", "-q", str(rate // concurrency), "-t", "10", "-o", "csv"]
        if body is not None:
            self.argv += ["-m", "POST", "-T", "application/json", "-H", f"Authorization: Bearer {common.API_TOKEN}",
                          "-d", body]
        self.processes: list[tuple[common.Service, float]] = []

    def run(self) -> dict:
        return self.start().finish()

    def start(self) -> Load:
        count, connections = (self.concurrency, 1) if self.shape == SMOOTH else (1, self.concurrency)
        first = time.perf_counter()
        for n in range(count):
            time.sleep(max(first + n / self.rate - time.perf_counter(), 0))
            started = time.perf_counter()
            service = common.Service(f"hey-{self.label}-{n}", [*self.argv, "-c", str(connections), self.url],
                                     common.base_env()).start()
            self.processes.append((service, started))
        return self

    def finish(self) -> dict:
        """Wait for every hey, then the figures of all their answered requests together."""
        rows = []
        for service, started in self.processes:
            try:
                returncode = service.process.wait(self.seconds + 60)
            finally:
                service.stop()
            if returncode != 0:
                raise RuntimeError(f"{service.name} exited with {returncode}:\n{service.log()[-2000:]}")
            rows += [(latency, status, started + offset) for latency, status, offset in parse_hey_csv(service.log())]
        return figures(rows, ticks=self.rate * self.seconds)


def parse_hey_csv(output: str) -> list[tuple[float, int, float]]:
    """(latency s, status code, offset s from hey's start) of each answered request in ``hey -o csv`` output."""
    rows = []
    for line in output.splitlines():
        fields = line.split(",")
        if len(fields) == 8 and fields[0][:1].isdigit():
            rows.append((float(fields[0]), int(fields[6]), float(fields[7])))
    return rows


def figures(rows: list[tuple[float, int, float]], *, ticks: int) -> dict:
    """Latency percentiles (nearest rank) and max in ms, answers by status, and the rate the requests went at."""
    if not rows:
        raise RuntimeError("hey reported no answered request")
    latencies = sorted(latency * 1000 for latency, _, _ in rows)
    starts = sorted(start for _, _, start in rows)
    result = {f"p{p}_ms": round(latencies[max(math.ceil(p / 100 * len(latencies)) - 1, 0)], 1)
              for p in (50, 90, 99)}
    result["max_ms"] = round(latencies[-1], 1)
    result["mean_ms"] = round(sum(latencies) / len(latencies), 1)
    result["answered"] = len(rows)
    result["ticks"] = ticks
    result["status_codes"] = {str(code): n for code, n in sorted(Counter(status for _, status, _ in rows).items())}
    span = starts[-1] - starts[0]
    result["rate_per_s"] = round((len(rows) - 1) / span, 1) if span > 0 else None
    return result


def _last_booking_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT coalesce(max(id), 0) FROM bookings")).scalar_one()


def _bookings_since(engine: Engine, last_id: int) -> set[int]:
    with engine.connect() as connection:
        return set(connection.execute(text("SELECT id FROM bookings WHERE id > :id"), {"id": last_id}).scalars())


def _outbox(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()


def _wait_outbox_empty(engine: Engine, *, timeout: float, since: float | None = None) -> float:
    """Wait until the outbox is empty; return the seconds since ``since`` (default: now) it took."""
    since = time.perf_counter() if since is None else since
    common.wait_until(lambda: _outbox(engine) == 0, timeout=timeout, interval=0.02, what="an empty outbox")
    return round(time.perf_counter() - since, 2)


def _invoice_check(engine: Engine, before: int) -> dict:
    """Take every message off ``emails``: exactly one send_invoice_email per booking made after id ``before``?"""
    made = _bookings_since(engine, before)
    messages = support.take_messages("emails", common.BROKER_URL)
    invoices = [m["args"][0] for m in messages if m.get("actor_name") == SEND_INVOICE_EMAIL.actor]
    result = {"messages": len(messages), "invoices": len(invoices), "distinct_bookings": len(set(invoices)),
              "bookings": len(made), "missing": len(made - set(invoices)), "unknown": len(set(invoices) - made)}
    result["ok"] = result["messages"] == result["invoices"] == result["distinct_bookings"] == len(made) \
        and not result["missing"]
    return result


class _OutboxSampler(probes.Sampler):
    """The outbox's row count every ``interval`` seconds: did the relay keep up while the load ran?"""

    name = "outbox-sampler"

    def __init__(self, engine: Engine, *, interval: float = 0.25) -> None:
        super().__init__(interval=interval)
        self.engine = engine
        self.samples: list[int] = []

    def sample(self) -> None:
        with self.engine.connect() as connection:
            self.samples.append(connection.execute(text("SELECT count(*) FROM outbox")).scalar_one())

    @property
    def max(self) -> int:
        return max(self.samples, default=0)

    @property
    def mean(self) -> float:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else 0.0
