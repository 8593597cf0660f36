"""``make run``: migrate (the database, and the queues to QUEUE_TYPE), add demo data, then run every antrian
service here in the foreground.

Like honcho or foreman: each child's output lines carry its name, Ctrl-C (or SIGTERM) stops them
all, and when one child dies the others are stopped and this exits non-zero, naming it (unless it is
one of DEV_RESTART_ON_EXIT, below).

Every variable of SPEC's configuration is passed through from the environment (which antrian.config
reads, as every antrian process does). Besides those (antrian.config.DevSettings):
  DEMO_DATA (default ``true``)         seed demo students and tours into an empty database
  DEV_SCHOOL_API_PORT (default 8081)   where the development school API listens; it is started
                                       only when UPSTREAM_BASE_URL is unset
  DEV_PAYMENT_GATEWAY_PORT (8082)      where the development payment gateway's status API listens; it is
                                       started only when PAYMENT_API_BASE_URL is unset and the payment
                                       simulator is on (make run's default)
  MAIL_SINK_SMTP_PORT (default 1025)   where the development mail sink takes mail; it is started only
  MAIL_SINK_PORT (default 8025)        when SMTP_HOST and SMTP_PORT are unset (and MAIL_BACKEND is smtp),
  MAIL_SINK_DIR (var/mail-sink)        shows what it got on its web page and keeps it as .eml files
  METRICS_PORT (default 9191)          sync-worker's metrics port; each further worker takes the
                                       next port (offset), as SPEC's defaults 9191/9192/9193 do
  DEV_RESTART_ON_EXIT (default none)   children started again when they exit, comma-separated names
                                       (e.g. ``sync-worker,mailer,booking-expiry``), as a container's
                                       restart policy would: what is left of its process group is killed
                                       first. One that exits within RESTART_MIN_UPTIME_S of its start
                                       still stops everything (a crash loop). ``make soak`` uses it.
PAYMENT_SIMULATOR defaults to ``true`` here, so a person can pay for a booking, and SESSION_COOKIE_SECURE to
``false`` (plain http on loopback). When API_TOKEN or
PAYMENT_SERVER_KEY is unset a development value is generated and printed.

EXPIRY_SWEEP_SECONDS and BOOKING_EXPIRY_MINUTES pass through too: booking-expiry-scheduler enqueues the
sweep that often, and sync-api gives each booking that long to be paid.

Adding a service is one ``Child`` entry in ``CHILDREN``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from antrian.config import (
    DEFAULT_METRICS_PORTS,
    ConfigError,
    environment,
    given,
    load_dev_settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # .venv/bin: `make run` runs .venv/bin/python
STOP_TIMEOUT_S = 25  # what a child gets between SIGTERM and SIGKILL
READY_TIMEOUT_S = 90
#: A child of DEV_RESTART_ON_EXIT that exits sooner than this after its start is not started again.
RESTART_MIN_UPTIME_S = 10.0


def upstream_unset(environ: Mapping[str, str]) -> bool:
    return not given("UPSTREAM_BASE_URL", environ)


def payment_gateway_unset(environ: Mapping[str, str]) -> bool:
    """No PAYMENT_API_BASE_URL and the simulator on (make run's default): the development gateway stands in."""
    return (not given("PAYMENT_API_BASE_URL", environ)
            and load_settings({"PAYMENT_SIMULATOR": "true", **environ}).payment_simulator)


def smtp_unset(environ: Mapping[str, str]) -> bool:
    """SMTP_HOST and SMTP_PORT left at their defaults: the mail goes to the development mail sink."""
    return (not given("SMTP_HOST", environ) and not given("SMTP_PORT", environ)
            and load_settings(environ).mail_backend == "smtp")


@dataclass(frozen=True)
class Child:
    """A process to run. ``argv`` and ``ready`` are filled in with ``{port}``, ``{metrics_port}`` and the
    development stand-ins' ``{dev_port}``, ``{sink_port}``, ``{sink_smtp_port}``."""

    name: str
    argv: tuple[str, ...]  # argv[0] is a program in .venv/bin
    condition: Callable[[Mapping[str, str]], bool] = lambda environ: True  # given the user's environment
    ready: str | None = None  # a URL that answers 200 once the child is up
    metrics_offset: int | None = None  # a worker: its METRICS_PORT is the base port plus this


CHILDREN = [
    Child("dev-school-api",
          ("python", "dev/school_api.py", "--port", "{dev_port}", "--latency-ms", "50", "--transient-rate", "0.1",
           "--permanent-rate", "0.02"),
          condition=upstream_unset, ready="http://127.0.0.1:{dev_port}/healthz"),
    Child("dev-payment-gateway",
          ("python", "dev/payment_gateway.py", "--port", "{gateway_port}", "--latency-ms", "50",
           "--server-key={payment_server_key}"),  # one argument: a generated key may start with "-"
          condition=payment_gateway_unset, ready="http://127.0.0.1:{gateway_port}/healthz"),
    Child("mail-sink",
          ("python", "dev/mail_sink.py", "--host", "127.0.0.1", "--smtp-port", "{sink_smtp_port}",
           "--web-port", "{sink_port}", "--dir", "{sink_dir}"),
          condition=smtp_unset, ready="http://127.0.0.1:{sink_port}/api/messages"),
    # Its /metrics on the port below the workers' (9190 by default), not on its API port.
    Child("sync-api", ("sync-api",), ready="http://127.0.0.1:{port}/healthz", metrics_offset=-1),
    Child("sync-worker", ("sync-worker", "--processes", "1", "--threads", "16"),
          ready="http://127.0.0.1:{metrics_port}/metrics", metrics_offset=0),
    Child("mailer", ("mailer", "--processes", "1", "--threads", "4"),
          ready="http://127.0.0.1:{metrics_port}/metrics", metrics_offset=1),
    Child("booking-expiry", ("booking-expiry", "--processes", "1", "--threads", "2"),
          ready="http://127.0.0.1:{metrics_port}/metrics", metrics_offset=2),
    # Enqueues the sweep every EXPIRY_SWEEP_SECONDS (`antrian schedule work`); it serves nothing to wait for.
    Child("booking-expiry-scheduler", ("booking-expiry-scheduler",)),
]


@dataclass
class Running:
    child: Child
    process: subprocess.Popen
    reader: threading.Thread
    ready_url: str | None
    metrics_port: int | None
    started_at: float = field(default_factory=time.monotonic)


class Signals:
    """The first SIGINT/SIGTERM asks for a stop; a second one kills at once."""

    stop = False
    force = False

    @classmethod
    def handle(cls, signum, frame) -> None:
        cls.force, cls.stop = cls.stop, True


_print_lock = threading.Lock()
WIDTH = max(len(child.name) for child in CHILDREN)


def say(text: str, name: str = "run") -> None:
    with _print_lock:
        print(f"{name:<{WIDTH}} | {text}", flush=True)


def spawn(argv: list[str], env: dict[str, str], **options) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **options)


def step(*argv: str, env: dict[str, str]) -> int:
    """Run a one-off command (migrate, seed); when it fails it has printed one line saying why."""
    process = spawn(list(argv), env)
    pump(argv[0], process.stdout)
    return process.wait()


def pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        say(line.decode(errors="replace").rstrip(), name)


def start(child: Child, env: dict[str, str], ports: dict[str, int], sink_dir: str) -> Running:
    metrics_port = None if child.metrics_offset is None else ports["metrics_base"] + child.metrics_offset
    values = {**ports, "metrics_port": metrics_port, "sink_dir": sink_dir,
              "payment_server_key": env.get("PAYMENT_SERVER_KEY", "")}
    child_env = env if metrics_port is None else {**env, "METRICS_PORT": str(metrics_port)}
    # A session (and process group) of its own: Ctrl-C reaches only us, and we stop each group whole.
    process = spawn([arg.format(**values) for arg in child.argv], child_env, start_new_session=True)
    reader = threading.Thread(target=pump, args=(child.name, process.stdout), daemon=True)
    reader.start()
    return Running(child, process, reader, child.ready and child.ready.format(**values), metrics_port)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def watch(running: list[Running], on_ready: Callable[[], None],
          restart: Callable[[Running], Running] | None = None, restartable: Collection[str] = ()) -> str | None:
    """Until a stop is asked: call ``on_ready`` once every child answers; return why one died or never got ready.

    A child named in ``restartable`` that exits after RESTART_MIN_UPTIME_S is replaced in ``running`` by
    ``restart(it)`` instead.
    """
    pending = [item for item in running if item.ready_url]
    deadline = time.monotonic() + READY_TIMEOUT_S
    announced = False
    while not Signals.stop:
        for index, item in enumerate(running):
            if item.process.poll() is not None:
                problem = f"{item.child.name} exited unexpectedly with code {item.process.returncode}"
                if restart is None or item.child.name not in restartable:
                    return problem
                uptime = time.monotonic() - item.started_at
                if uptime < RESTART_MIN_UPTIME_S:
                    return (f"{problem} {uptime:.1f}s after it started: not started again "
                            f"(DEV_RESTART_ON_EXIT, only after {RESTART_MIN_UPTIME_S:g}s)")
                running[index] = restart(item)
        if not announced:
            pending = [item for item in pending if not answers(item.ready_url)]
            if not pending:
                on_ready()
                announced = True
            elif time.monotonic() > deadline:
                return f"not ready after {READY_TIMEOUT_S}s: {', '.join(item.child.name for item in pending)}"
        time.sleep(0.25)
    return None


def signal_group(item: Running, signum: int) -> bool:
    """Send ``signum`` to the child's whole process group (0: just look); False when none of it is left."""
    item.process.poll()  # reap the leader, else it still counts as a member
    try:
        os.killpg(item.process.pid, signum)
        return True
    except ProcessLookupError:
        return False


def stop_all(running: list[Running]) -> None:
    """Stop each child as Docker or Kubernetes would: SIGTERM to its main process, which stops its own
    workers (a second SIGTERM straight to a Dramatiq worker process would kill it mid-message), then
    wait up to STOP_TIMEOUT_S for its whole process group to end, and SIGKILL what is left."""
    for item in running:
        if item.process.poll() is None:
            item.process.terminate()
        else:  # the main process is gone already: whatever it left behind gets the SIGTERM
            signal_group(item, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(signal_group(item, 0) for item in running) and time.monotonic() < deadline and not Signals.force:
        time.sleep(0.1)
    for item in running:
        if signal_group(item, signal.SIGKILL):
            say(f"{item.child.name} was still running: killed")
    for item in running:
        item.process.wait()
        item.reader.join(timeout=2)


def restart(item: Running, env: dict[str, str], ports: dict[str, int], sink_dir: str) -> Running:
    """Start ``item``'s child again, once what is left of its process group (a worker process whose main
    process was killed) is killed and gone: a container's restart policy, which frees its ports first."""
    say(f"{item.child.name} (pid {item.process.pid}) exited with code {item.process.returncode}: "
        f"starting it again (DEV_RESTART_ON_EXIT)")
    signal_group(item, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while signal_group(item, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    item.reader.join(timeout=2)
    try:
        again = start(item.child, env, ports, sink_dir)
    except OSError as exc:
        raise OSError(f"cannot start {item.child.name} again: {exc}") from exc
    say(f"started {item.child.name} again (pid {again.process.pid})")
    return again


def generate_if_unset(env: dict[str, str], variable: str) -> bool:
    """Give ``variable`` a random development value when it is unset; True when it did."""
    if env.get(variable, "").strip():
        return False
    env[variable] = secrets.token_urlsafe(32)
    say(f"{variable} is unset: generated a development value: {env[variable]}")
    return True


def bookable_tour(env: Mapping[str, str]) -> int | None:
    """The id of a tour with two seats left, for the printed example; None when there is none."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from antrian.db import engine as db
    from antrian.db.models import Tour

    engine = db.engine_for(load_settings(env))
    try:
        with engine.connect() as connection:
            return connection.scalar(select(Tour.id).where(Tour.quota >= 2).order_by(Tour.starts_at).limit(1))
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def where_to_look(running: list[Running], env: dict[str, str], ports: dict[str, int], generated: set[str],
                  tour_id: int | None, sink_dir: str) -> None:
    base = f"http://127.0.0.1:{ports['port']}"

    def secret(variable: str) -> str:
        return f"{env[variable]}  (generated for this run)" if variable in generated else "the one in your environment"

    names = {item.child.name for item in running}
    say("ready. Where to look:")
    say(f"  admin page  {base}/admin/sync-pembayaran")
    say(f"  jobs page   {base}/admin/jobs  (queues, failed jobs; or `antrian queues`, `antrian jobs failed`)")
    say(f"  API         {base}/api/  (Authorization: Bearer <API_TOKEN>)")
    say(f"  API_TOKEN   {secret('API_TOKEN')}")
    label = "  metrics   "
    for item in running:  # sync-api's first: its port is the workers' base less one
        if item.metrics_port is not None:
            say(f"{label} http://127.0.0.1:{item.metrics_port}/metrics ({item.child.name})")
            label = " " * len(label)
    say(f"  school API  {env['UPSTREAM_BASE_URL']}")
    say(f"  gateway     {env.get('PAYMENT_API_BASE_URL') or 'the payment gateway sandbox (PAYMENT_API_BASE_URL unset)'}"
        "  (its status API confirms every payment)")
    if "mail-sink" in names:
        say(f"  mail sink   http://127.0.0.1:{ports['sink_port']}/  (every email sent, kept in "
            f"{sink_dir}/)")
    say(f"  payments    PAYMENT_SERVER_KEY {secret('PAYMENT_SERVER_KEY')}")
    say(f"  expiry      {expiry(env)}")
    try_it(env, base, tour_id, token=env["API_TOKEN"] if "API_TOKEN" in generated else "$API_TOKEN")
    say("Ctrl-C stops everything.")


def expiry(env: Mapping[str, str]) -> str:
    """When unpaid bookings expire and how often the sweep looks (``antrian migrate`` has validated both)."""
    settings = load_settings(env)
    return (f"unpaid bookings expire {settings.booking_expiry_minutes} min after they are made "
            f"(BOOKING_EXPIRY_MINUTES), swept every {settings.expiry_sweep_seconds} s (EXPIRY_SWEEP_SECONDS)")


def try_it(env: Mapping[str, str], base: str, tour_id: int | None, *, token: str) -> None:
    """Print a booking, and its simulated payment, to copy and paste (unprefixed, so whole lines copy)."""
    headers = f'-H "Authorization: Bearer {token}" -H "Content-Type: application/json"'
    booking = {"tour_id": tour_id or "TOUR_ID", "quantity": 2, "customer_name": "Dewi Lestari",
               "customer_email": "dewi@example.com"}
    simulator = load_settings(env).payment_simulator
    say("Book 2 seats on a demo tour" + (", then pay for them with the booking's code:" if simulator else ":")
        + ("" if tour_id else "  (no tour has 2 seats left: add one with POST /api/tours)"))
    with _print_lock:
        print(f"curl -s {headers} -d '{json.dumps(booking)}' {base}/api/bookings", flush=True)
        if simulator:
            print(f"""curl -s {headers} -d '{{"code": "CODE"}}' {base}/api/payments/simulate""", flush=True)


def main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, Signals.handle)
    # sync-api listens on every interface in a container; on a laptop, only on loopback unless asked.
    # A person trying bookings out pays with the simulator (SPEC's default, false, is for production), and
    # logs in to the admin pages over plain http on loopback (so the session cookie cannot be Secure-only).
    user = environment()
    env = {"HOST": "127.0.0.1", "PAYMENT_SIMULATOR": "true", "SESSION_COOKIE_SECURE": "false", **user,
           "PYTHONUNBUFFERED": "1"}
    try:
        settings, dev = load_settings(env), load_dev_settings(env)
        children = [child for child in CHILDREN if child.condition(user)]
    except ConfigError as exc:
        say(str(exc))
        return 2
    unknown = sorted(set(dev.dev_restart_on_exit) - {child.name for child in CHILDREN})
    if unknown:
        say(f"DEV_RESTART_ON_EXIT names no child: {', '.join(unknown)} "
            f"(children: {', '.join(child.name for child in CHILDREN)})")
        return 2
    ports = {"port": settings.port, "dev_port": dev.dev_school_api_port, "sink_port": dev.mail_sink_port,
             "gateway_port": dev.dev_payment_gateway_port,
             "sink_smtp_port": dev.mail_sink_smtp_port,
             "metrics_base": settings.metrics_port or DEFAULT_METRICS_PORTS["sync-worker"]}
    generated = {variable for variable in ("API_TOKEN", "PAYMENT_SERVER_KEY") if generate_if_unset(env, variable)}
    if upstream_unset(user):
        env["UPSTREAM_BASE_URL"] = f"http://127.0.0.1:{ports['dev_port']}"
        say(f"UPSTREAM_BASE_URL is unset: the development school API stands in at {env['UPSTREAM_BASE_URL']}")
    if payment_gateway_unset(user):
        env["PAYMENT_API_BASE_URL"] = f"http://127.0.0.1:{ports['gateway_port']}"
        say(f"PAYMENT_API_BASE_URL is unset: the development payment gateway stands in at "
            f"{env['PAYMENT_API_BASE_URL']}")
    if smtp_unset(user):
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(ports["sink_smtp_port"]))
        say(f"SMTP_HOST and SMTP_PORT are unset: the development mail sink takes the mail at "
            f"{env['SMTP_HOST']}:{env['SMTP_PORT']}")
    if code := step("antrian", "migrate", env=env):
        return code
    # Nothing of antrian runs yet: queues left of another QUEUE_TYPE (an older antrian) are moved over, messages kept.
    if code := step("antrian", "queues", "migrate", env=env):
        return code
    if dev.demo_data and (code := step("antrian", "seed-demo", "--if-empty", env=env)):
        return code
    if Signals.stop:
        return 0
    tour_id = bookable_tour(env)
    running: list[Running] = []
    problem = None
    try:
        for child in children:
            running.append(start(child, env, ports, dev.mail_sink_dir))
        say(f"started {', '.join(f'{item.child.name} (pid {item.process.pid})' for item in running)}")
        problem = watch(running, lambda: where_to_look(running, env, ports, generated, tour_id, dev.mail_sink_dir),
                        restart=lambda item: restart(item, env, ports, dev.mail_sink_dir),
                        restartable=dev.dev_restart_on_exit)
    except OSError as exc:  # a program missing from .venv/bin: run `make install`
        problem = f"cannot start {children[len(running)].name}: {exc}" if len(running) < len(children) else str(exc)
    finally:
        say(f"{problem}; stopping the others" if problem else "stopping every service")
        stop_all(running)
    say("stopped")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
