"""Part (n): POST /api/bookings at 100/s offered from four clients, the whole `make run` stack running and
the mailer sending every invoice, vs GET /healthz under the same load (issue 18, part 3).

The issue's acceptance check: "at 100 bookings/s offered with the whole `make run` stack on this machine,
every invoice sent, at least 95% of the rate is achieved and p50 and p99 stay within 2x of `/healthz` measured
under the same load". Its earlier measurement: 83/s achieved, POST at 2.6x (p50) and 1.9x (p99) /healthz.

The stack is ``make run``'s own: dev/run.py as a child of the bench (its own process group), on the bench's
database and vhost, on free ports, without demo data, the expiry sweep every hour (none during the run). It
starts sync-api, sync-worker, mailer, booking-expiry and its scheduler, the development school API, payment
gateway and mail sink: every invoice goes over SMTP to the sink, which keeps it as a .eml file. Order:

1. the stack ready (sync-api's /readyz, dev/run.py's "ready", a consumer on ``emails``), one tour made by
   POST /api/tours with seats for the whole run;
2. ``GET /healthz`` alone, the stack idle, in the booking load's shape (information);
3. a warm-up of ``WARMUP_S`` seconds of bookings at the same rate (each gunicorn thread opens its database
   connection on its first request), and every one of their invoices sent;
4. the measured load: ``clients`` hey processes of one connection each (``-c 1 -q rate/clients``, started
   ``1/rate`` s apart, so that the requests are spread evenly, as part (e) explains), and meanwhile one more
   hey probing ``GET /healthz`` of the same sync-api at ``healthz_rate``/s: "/healthz under the same load";
   CPU by process and the database's busy sessions are sampled meanwhile;
5. every invoice sent: email_deliveries rows of kind ``invoice`` with status ``sent`` and the sink's
   .eml files, against the bookings made (warm-up included), waited for at most ``invoice_timeout_s``.

The achieved rate is the 201s answered divided by the load's seconds; hey drops a connection's tick while
its request is outstanding, so a slow spell shows as a lower rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from sqlalchemy import Engine, text

from tests.support import free_ports_in_a_row

from . import common, probes
from .bookings_latency import BOOKING, SMOOTH, TOUR_QUOTA, Load, create_tour

#: Sizes of the full suite and of ``--small`` (merged into bench/__main__.py's FULL and SMALL; each becomes an option).
FULL: dict = {"n_rate": 100, "n_clients": 4, "n_seconds": 30, "n_healthz_rate": 10, "n_invoice_timeout_s": 120}
SMALL: dict = {"n_seconds": 5}

WARMUP_S = 3
READY_TIMEOUT_S = 150
STOP_TIMEOUT_S = 60
RATE_SHARE = 0.95
RATIO_TARGET = 2.0
#: What a developer's shell may hold that would change what dev/run.py starts or where it points (as soak.py).
SHELL_SETTINGS = ("UPSTREAM_BASE_URL", "PAYMENT_API_BASE_URL", "SMTP_HOST", "SMTP_PORT", "MAIL_BACKEND",
                  "PAYMENT_SIMULATOR", "PROMETHEUS_MULTIPROC_DIR", "METRICS_PORT", "PORT", "DB_POOL_SIZE",
                  "RABBITMQ_MANAGEMENT_URL", "PAYMENT_RECONCILE_SECONDS", "QUEUE_TYPE", "DEV_RESTART_ON_EXIT")
_STARTED = re.compile(r"^run\s*\| started (.*)$", re.MULTILINE)
_ONE = re.compile(r"([\w-]+) \(pid (\d+)\)")


def run(engine: Engine, args: argparse.Namespace) -> dict:
    sizes = _sizes(args)
    rate, clients, seconds = sizes["n_rate"], sizes["n_clients"], sizes["n_seconds"]
    hey = shutil.which("hey")
    if hey is None:
        raise RuntimeError("hey is not installed: run scripts/ensure-load-tools.sh (make bench does)")
    if rate % clients:
        raise ValueError(f"the rate {rate}/s must be a multiple of the clients {clients}")
    if rate * (seconds + WARMUP_S) * 1.2 > TOUR_QUOTA:
        raise ValueError(f"{rate}/s for {seconds}s would run the tour's {TOUR_QUOTA} seats out")
    common.clear_bookings(engine)
    stack = Stack()
    try:
        stack.start()
        body = json.dumps({"tour_id": create_tour(stack.api), **BOOKING})
        load = {"hey": hey, "rate": rate, "concurrency": clients, "shape": SMOOTH}
        common.log(f"(n) GET /healthz alone at {rate}/s for {seconds}s, {clients} clients")
        alone = Load("n-healthz-alone", f"{stack.api}/healthz", seconds=seconds, **load).run()
        common.log(f"(n) warm-up: POST /api/bookings at {rate}/s for {WARMUP_S}s, then its invoices sent")
        warmup = Load("n-warmup", f"{stack.api}/api/bookings", seconds=WARMUP_S, body=body, **load).run()
        warmup_invoices = _wait_invoices(engine, stack, timeout=sizes["n_invoice_timeout_s"])
        common.log(f"(n) POST /api/bookings at {rate}/s for {seconds}s from {clients} clients, GET /healthz"
                   f" at {sizes['n_healthz_rate']}/s meanwhile")
        last_id_before = _count(engine, "SELECT coalesce(max(id), 0) FROM bookings")
        posts = Load("n-bookings", f"{stack.api}/api/bookings", seconds=seconds, body=body, **load)
        probe = Load("n-healthz-under-load", f"{stack.api}/healthz", hey=hey, rate=sizes["n_healthz_rate"],
                     concurrency=1, shape=SMOOTH, seconds=seconds)
        posts.start()
        probe.start()
        # Entered after hey started, so that CpuMeter names hey's CPU; the second meter runs on until the last
        # invoice is sent.
        with StackCpuMeter(stack.groups()) as until_sent:
            with StackCpuMeter(stack.groups()) as cpu, probes.DbActivitySampler(engine, interval=0.1) as db:
                post = posts.finish()
                under_load = probe.finish()
            invoices = _wait_invoices(engine, stack, timeout=sizes["n_invoice_timeout_s"], final=True)
        bookings_made = _count(engine, f"SELECT count(*) FROM bookings WHERE id > {last_id_before}")
        invoices["booking_to_sent"] = _invoice_lag(engine, last_id_before)
    finally:
        left = stack.stop()
        common.stop_all()
    common.clear_bookings(engine)
    if invoices["ok"]:  # thousands of .eml files; kept when a check failed, to look at
        shutil.rmtree(stack.sink_dir, ignore_errors=True)
    answered_201 = post["status_codes"].get("201", 0)
    post.update(achieved_per_s=round(answered_201 / seconds, 1), bookings_made=bookings_made, **cpu.report(),
                db_sessions=db.report())
    ratios = {f"{p}_under_load": round(post[f"{p}_ms"] / under_load[f"{p}_ms"], 2) for p in ("p50", "p99")}
    ratios.update({f"{p}_alone": round(post[f"{p}_ms"] / alone[f"{p}_ms"], 2) for p in ("p50", "p99")})
    checks = {
        "rate": post["achieved_per_s"] >= RATE_SHARE * rate,
        "p50": ratios["p50_under_load"] <= RATIO_TARGET,
        "p99": ratios["p99_under_load"] <= RATIO_TARGET,
        "invoices": invoices["ok"],
    }
    common.log(f"(n) {post['achieved_per_s']}/s achieved of {rate}/s; POST p50 {post['p50_ms']} ms p99"
               f" {post['p99_ms']} ms; /healthz under load p50 {under_load['p50_ms']} ms p99 {under_load['p99_ms']}"
               f" ms; invoices {invoices['sent']} / {invoices['bookings']}, the last"
               f" {invoices['booking_to_sent']['last_after_last_booking_s']}s after the last booking")
    return {"rate": rate, "clients": clients, "seconds": seconds, "healthz_rate": sizes["n_healthz_rate"],
            "warmup_s": WARMUP_S, "warmup": {"answered": warmup["answered"], "status_codes": warmup["status_codes"],
                                             "invoices_sent_after_s": warmup_invoices["waited_s"]},
            "bookings": post, "healthz_under_load": under_load, "healthz_alone": alone, "ratios": ratios,
            "invoices": invoices, "until_last_invoice": {**until_sent.report(), "bookings": bookings_made},
            "stack": stack.summary(), "left_running": left, "checks": checks, "ok": all(checks.values())}


def _sizes(args: argparse.Namespace) -> dict:
    """The sizes bench/__main__.py parsed; FULL's (with SMALL's under ``--small``) for any it lacks."""
    sizes = {**FULL, **(SMALL if getattr(args, "small", False) else {})}
    return {**sizes, **{name: getattr(args, name) for name in FULL if getattr(args, name, None) is not None}}


class Stack:
    """``dev/run.py`` (what ``make run`` runs) as a registered bench service, on its own free ports."""

    def __init__(self) -> None:
        self.folder = common.log_path("n-stack")
        self.sink_dir = self.folder / "mail-sink"
        self.port, self.school_port, self.gateway_port, self.smtp_port, self.sink_port = common.free_ports(5)
        # sync-api's metrics on the base port less one, the three workers' on the base and the two above it.
        self.metrics_base = free_ports_in_a_row(4) + 1
        self.api = f"http://127.0.0.1:{self.port}"
        self.service: common.Service | None = None
        self.children: dict[str, int] = {}

    def env(self) -> dict[str, str]:
        tmp = self.folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {name: value for name, value in common.base_env().items() if name not in SHELL_SETTINGS}
        env.update(
            DEMO_DATA="false", EXPIRY_SWEEP_SECONDS="3600", PAYMENT_SERVER_KEY="bench-server-key-0123456789",
            # The workers' heartbeat folders and every metrics folder: apart from a `make run` on this machine.
            TMPDIR=str(tmp), PROMETHEUS_MULTIPROC_BASE=str(tmp), MAIL_SINK_DIR=str(self.sink_dir),
            PORT=str(self.port), METRICS_PORT=str(self.metrics_base), DEV_SCHOOL_API_PORT=str(self.school_port),
            DEV_PAYMENT_GATEWAY_PORT=str(self.gateway_port), MAIL_SINK_SMTP_PORT=str(self.smtp_port),
            MAIL_SINK_PORT=str(self.sink_port),
        )
        return env

    def start(self) -> None:
        """Start dev/run.py; wait until sync-api is ready, dev/run.py says every child is, and the mailer consumes."""
        common.log(f"(n) starting the make run stack (dev/run.py), sync-api on port {self.port}")
        self.service = common.Service(f"dev-run-{self.port}", [sys.executable, str(common.ROOT / "dev" / "run.py")],
                                      self.env(), ready_url=f"{self.api}/readyz")
        self.service.start(timeout=READY_TIMEOUT_S)
        common.wait_until(self._ready, timeout=READY_TIMEOUT_S, interval=0.25, what="dev/run.py's 'ready' line")
        common.wait_until(lambda: _consumers("emails") > 0, timeout=60, interval=0.25, what="a consumer on emails")
        match = _STARTED.search(self.service.log())
        self.children = {name: int(pid) for name, pid in _ONE.findall(match.group(1))} if match else {}

    def _ready(self) -> bool:
        if self.service.process.poll() is not None:
            raise RuntimeError(f"dev/run.py exited with {self.service.process.returncode}:\n"
                               f"{self.service.log()[-3000:]}")
        return "Ctrl-C stops everything." in self.service.log()

    def groups(self) -> dict[int, str]:
        """Process group -> child name: dev/run.py starts each child in a session of its own."""
        return {pid: name for name, pid in self.children.items()}

    def sink_files(self) -> list[Path]:
        return list(self.sink_dir.glob("*.eml"))

    def summary(self) -> dict:
        return {"children": sorted(self.children), "api": self.api, "sink_dir": str(self.sink_dir)}

    def stop(self) -> list[str]:
        """SIGTERM to dev/run.py (it stops every child, 25 s each at most); then any child group still there is
        killed and named."""
        if self.service is None:
            return []
        self.service.stop(timeout=STOP_TIMEOUT_S)
        left = []
        for name, pid in self.children.items():
            try:
                os.killpg(pid, signal.SIGKILL)
                left.append(name)
            except ProcessLookupError:
                pass
        if left:
            common.log(f"(n) still running after dev/run.py stopped, killed: {', '.join(left)}")
        return left


class StackCpuMeter(probes.CpuMeter):
    """probes.CpuMeter that also names the stack's children (each a process group of its own under dev/run.py)."""

    def __init__(self, groups: dict[int, str], **options) -> None:
        super().__init__(**options)
        self.stack_groups = groups
        self.other_commands: dict[int, str] = {}

    def _who(self, pid: int, command: str, pgid: int) -> str:
        who = self.stack_groups.get(pgid) or super()._who(pid, command, pgid)
        if who == "other":
            self.other_commands[pid] = command
        return who

    def report(self) -> dict:
        """probes.CpuMeter's report, and the CPU seconds of "other" (outside the bench) by command, largest first."""
        others: dict[str, float] = {}
        for pid, command in self.other_commands.items():
            if pid in self._last:
                used = self._last[pid][1] - self._first.get(pid, ("", 0.0))[1]
                others[command] = others.get(command, 0.0) + max(used, 0.0)
        top = sorted(((command, round(used, 2)) for command, used in others.items() if used >= 0.01),
                     key=lambda item: -item[1])[:5]
        return {**super().report(), "other_by_command": dict(top)}


def _wait_invoices(engine: Engine, stack: Stack, *, timeout: float, final: bool = False) -> dict:
    """Wait (at most ``timeout`` s) until every booking's invoice is marked sent and the sink holds one .eml each."""
    started = time.perf_counter()

    def state() -> dict:
        with engine.connect() as connection:
            row = connection.execute(text(
                """SELECT (SELECT count(*) FROM bookings) AS bookings,
                          count(*) FILTER (WHERE status = 'sent') AS sent,
                          count(*) FILTER (WHERE status = 'failed') AS failed
                   FROM email_deliveries WHERE kind = 'invoice'""")).one()
        return {"bookings": row.bookings, "sent": row.sent, "failed": row.failed, "sink": len(stack.sink_files())}

    current = state()
    deadline = started + timeout
    while not (current["sent"] == current["bookings"] <= current["sink"]) and time.perf_counter() < deadline:
        time.sleep(0.25)
        current = state()
    result = {key: current[key] for key in ("bookings", "sent", "failed", "sink")}
    result["waited_s"] = round(time.perf_counter() - started, 1)
    result["ok"] = current["sent"] == current["bookings"] == current["sink"]
    if final:
        result["distinct_message_ids"] = _distinct_message_ids(stack.sink_files())
        result["ok"] = result["ok"] and result["distinct_message_ids"] == current["bookings"]
    return result


def _invoice_lag(engine: Engine, last_id: int) -> dict:
    """Over the bookings after ``last_id``: from a booking's transaction to its invoice's sent mark (p50, p99, max,
    in ms), and from the last booking made to the last invoice sent (s); database timestamps both."""
    with engine.connect() as connection:
        row = connection.execute(text(
            """SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY lag) AS p50_ms,
                      percentile_disc(0.99) WITHIN GROUP (ORDER BY lag) AS p99_ms, max(lag) AS max_ms,
                      extract(epoch FROM max(sent_at) - max(created_at)) AS last_after_last_booking_s
               FROM (SELECT extract(epoch FROM d.sent_at - b.created_at) * 1000 AS lag, d.sent_at, b.created_at
                     FROM bookings b JOIN email_deliveries d ON d.booking_id = b.id AND d.kind = 'invoice'
                     WHERE b.id > :id AND d.status = 'sent') AS lags"""), {"id": last_id}).one()
    return {key: None if value is None else round(float(value), 1 if key.endswith("_ms") else 2)
            for key, value in row._mapping.items()}


def _distinct_message_ids(files: list[Path]) -> int:
    parser = BytesHeaderParser(policy=policy.default)
    ids = set()
    for path in files:
        with path.open("rb") as file:
            ids.add(str(parser.parse(file).get("Message-ID", "")))
    return len(ids)


def _consumers(queue: str) -> int:
    connection = common.amqp_connection()
    try:
        return connection.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        if connection.is_open:
            connection.close()


def _count(engine: Engine, query: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text(query)).scalar_one()


# --------------------------------------------------------------------------- rows


def rows(result: dict, add) -> None:
    """The part's rows of the table: ``add(part, what, value, target="", ok=None)``."""
    if "bookings" not in result:
        return
    post, under, alone, ratios = result["bookings"], result["healthz_under_load"], result["healthz_alone"], \
        result["ratios"]
    rate, checks = result["rate"], result["checks"]
    add("n", f"POST /api/bookings, {rate}/s offered from {result['clients']} clients for {result['seconds']}s, make run"
             " stack: p50 / p90 / p99 / max", common.latencies(post))
    add("n", "  rate achieved (201s / seconds); answered of ticks; answers by status",
        f"{post['achieved_per_s']}/s; {post['answered']} of {post['ticks']}; {common.codes(post)}",
        f">= {RATE_SHARE * rate:g}/s", checks["rate"])
    add("n", f"GET /healthz under the same load ({result['healthz_rate']}/s, 1 client, {under['answered']} answers):"
             " p50 / p90 / p99 / max", common.latencies(under))
    add("n", "  ratio POST p50 / healthz p50 under load", f"{ratios['p50_under_load']:.2f}",
        f"<= {RATIO_TARGET:.1f}", checks["p50"])
    add("n", "  ratio POST p99 / healthz p99 under load", f"{ratios['p99_under_load']:.2f}",
        f"<= {RATIO_TARGET:.1f}", checks["p99"])
    add("n", f"GET /healthz alone, stack idle, {rate}/s from {result['clients']} clients: p50 / p90 / p99 / max",
        common.latencies(alone), "(info)")
    add("n", "  ratio POST / healthz alone, p50 and p99", f"{ratios['p50_alone']:.2f}x / {ratios['p99_alone']:.2f}x",
        "(info)")
    inv = result["invoices"]
    add("n", "invoices sent / sink .eml files / distinct Message-IDs / bookings (warm-up included)",
        f"{inv['sent']} / {inv['sink']} / {inv['distinct_message_ids']} / {inv['bookings']}", "all", inv["ok"])
    lag = inv["booking_to_sent"]
    add("n", "  booking made -> its invoice marked sent: p50 / p99 / max; last invoice after last booking; failed",
        f"{lag['p50_ms']} / {lag['p99_ms']} / {lag['max_ms']} ms; {lag['last_after_last_booking_s']} s;"
        f" {inv['failed']}", "(info)")
    add("n", "  CPU ms per booking by process (>= 0.05), during the load; machine busy (steal; loadavg before)",
        _per_booking(post["cpu_seconds"], max(post["bookings_made"], 1)) + f"; {common.machine(post)}")
    if post.get("other_by_command"):
        add("n", "    'other' (outside the bench) by command, CPU s during the load",
            ", ".join(f"{command} {used}" for command, used in post["other_by_command"].items()))
    total = result["until_last_invoice"]
    add("n", "  the same from the load's start until its last invoice was sent",
        _per_booking(total["cpu_seconds"], max(total["bookings"], 1)) + f"; {common.machine(total)}")
    add("n", "  mean busy DB sessions during the load", common.sessions(post["db_sessions"]))
    if result["left_running"]:
        add("n", "  stack processes left running after dev/run.py stopped (killed)",
            ", ".join(result["left_running"]), "none", False)


def _per_booking(cpu_seconds: dict[str, float], bookings: int) -> str:
    """CPU ms per booking by process, those under 0.05 ms left out."""
    shown = {who: seconds * 1000 / bookings for who, seconds in cpu_seconds.items()}
    return ", ".join(f"{who} {ms:.1f}" for who, ms in shown.items() if ms >= 0.05) or "none"


