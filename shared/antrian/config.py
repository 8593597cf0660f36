"""Settings from the environment: the one place antrian reads or writes ``os.environ``.

Every variable of SPEC's configuration table is parsed here, and so are the few internal ones that
antrian sets for its own child processes (documented on their fields). A wrong value raises
:class:`ConfigError` naming the variable, and a process turns that into one clear line. What a
process must hand on to a library or a child through the environment goes through :func:`export`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from antrian.errors import ConfigError

#: The payment gateway's status API when ``PAYMENT_API_BASE_URL`` is unset (SPEC: its sandbox).
DEFAULT_PAYMENT_API_BASE_URL = "https://api.sandbox.midtrans.com"

#: Where each worker serves ``/metrics`` when ``METRICS_PORT`` is unset.
#: Field metadata of a secret: its value is never echoed in an error.
SECRET = {"secret": True}

#: Failed sign-ins (the admin login form, or a wrong bearer token) allowed per window, per client address and per
#: token prefix, before sync-api answers 429.
LOGIN_FAILURES_ALLOWED = 10

#: A shorter ``API_TOKEN`` is refused: it opens everything, so it must not be guessable.
MIN_API_TOKEN_LENGTH = 32

DEFAULT_METRICS_PORTS = {"sync-api": 9190, "sync-worker": 9191, "mailer": 9192, "booking-expiry": 9193}

#: Database connections each process keeps open when ``DB_POOL_SIZE`` is unset. sync-api: one per gunicorn
#: thread (sync_api.gunicorn_conf.threads) plus the outbox relay's two, since a smaller pool opens and closes a
#: connection per request over it. A Dramatiq worker started by its entry point gets one per worker thread
#: (antrian.runtime.workers); these are the figures for a worker module loaded otherwise (tests, benchmarks).
DEFAULT_DB_POOL_SIZES = {"sync-api": 10, "sync-worker": 5, "mailer": 5, "booking-expiry": 2, "antrian": 1}

#: PostgreSQL's timeouts on every connection antrian makes (antrian.db.engine.make_engine), in milliseconds;
#: 0 turns one off, as in PostgreSQL. A statement may run 30 s (the longest legitimate ones, a sync run's
#: fan-out recording its items and a batch of the sweep, which sets its own, take a few seconds); a lock is
#: waited for 5 s (a tour's row is held for microseconds by a booking: waiting longer only ties up web threads).
DEFAULT_DB_STATEMENT_TIMEOUT_MS = 30_000
DEFAULT_DB_LOCK_TIMEOUT_MS = 5_000
#: A transaction may sit idle 300 s: no antrian process waits inside one any more (the mailer claims its delivery
#: row with a lease and talks SMTP with no transaction open), so what this ends is a session forgotten in a
#: transaction (a crashed client, a debugger); it stays generous for an operator's own psql session.
DEFAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = 300_000


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Parsed configuration. Build it with :func:`load_settings`; tests use ``replace()``."""

    # Secrets (and URLs that may hold passwords) stay out of repr(), so a logged Settings leaks none.
    database_url: str = field(default="postgresql+psycopg://postgres@127.0.0.1:5432/antrian", repr=False)
    broker_url: str = field(default="amqp://guest:guest@127.0.0.1:5672/", repr=False)
    #: RabbitMQ's management API, for queue counts and rates; derived from ``broker_url`` when unset.
    rabbitmq_management_url: str | None = field(default=None, repr=False)
    #: ``API_TOKEN``: the bootstrap admin's bearer token (operators get their own: ``antrian tokens create``);
    #: at least :data:`MIN_API_TOKEN_LENGTH` characters.
    api_token: str | None = field(default=None, repr=False, metadata=SECRET)
    upstream_base_url: str | None = None
    upstream_token: str | None = field(default=None, repr=False, metadata=SECRET)
    upstream_timeout_s: float = 30.0
    #: ``UPSTREAM_MAX_RESPONSE_BYTES``: the largest school API answer read; a bigger one fails that student
    #: permanently (a misbehaving server must not fill a worker's memory).
    upstream_max_response_bytes: int = 1024 * 1024
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False, metadata=SECRET)
    smtp_security: str = "none"
    #: ``SMTP_TIMEOUT_S``: seconds the mailer waits for the SMTP server to connect or answer, each time; a server
    #: that stops answering mid-transaction fails that attempt (retried) instead of holding a worker thread and
    #: its delivery row's lock until the emails' 120 s time limit. Keep it well below that limit.
    smtp_timeout_s: float = 30.0
    mail_from_address: str = "noreply@example.com"
    mail_from_name: str = "antrian"
    mail_backend: str = "smtp"
    mail_file_dir: str = "var/mail"
    booking_expiry_minutes: int = 30
    expiry_sweep_seconds: int = 300
    payment_server_key: str | None = field(default=None, repr=False, metadata=SECRET)
    payment_simulator: bool = False
    #: The gateway's status API; unset means its sandbox (:data:`DEFAULT_PAYMENT_API_BASE_URL`). ``make run``
    #: and compose point it at the development gateway when it is unset and the simulator is on.
    payment_api_base_url: str | None = None
    #: How often the scheduled task ``reconcile-payments`` asks the gateway about bookings whose payment may
    #: have been missed.
    payment_reconcile_seconds: int = 300
    #: Failed jobs that failed longer ago than this many days are pruned by the scheduled task ``prune-failed-jobs``.
    failed_jobs_retention_days: int = 7
    #: ``UPSTREAM_RATE_LIMIT``: school API requests per second, across every sync worker on every host (the budget
    #: is shared in PostgreSQL, :mod:`antrian.rate_limit`); None: no limit.
    upstream_rate_limit: float | None = None
    #: ``SMTP_RATE_LIMIT``: emails per second, across every mailer process; None: no limit.
    smtp_rate_limit: float | None = None
    #: ``QUEUE_TYPE``: ``quorum`` (replicated on a RabbitMQ cluster, with a delivery limit) or ``classic``, for every
    #: queue antrian declares (each queue, its ``.DQ`` and its ``.XQ``; :mod:`antrian.amqp.queue_types`).
    queue_type: str = "quorum"
    #: ``QUEUE_DELIVERY_LIMIT``: deliveries of one message (a worker killed while running it, a given-back message)
    #: after which a quorum queue dead-letters it, so that it ends as a failed job instead of looping.
    queue_delivery_limit: int = 10
    metrics_port: int | None = None
    port: int = 8000
    #: ``SESSION_COOKIE_SECURE``: the admin session cookie is sent over HTTPS only (and pages carry HSTS);
    #: ``make run`` turns it off for plain http on loopback.
    session_cookie_secure: bool = True
    host: str = "0.0.0.0"
    #: Connections each process keeps open (defaults: :data:`DEFAULT_DB_POOL_SIZES`).
    db_pool_size: int | None = None
    #: ``DB_STATEMENT_TIMEOUT_MS``: PostgreSQL's ``statement_timeout`` on every connection (0: none).
    db_statement_timeout_ms: int = DEFAULT_DB_STATEMENT_TIMEOUT_MS
    #: ``DB_LOCK_TIMEOUT_MS``: PostgreSQL's ``lock_timeout``: how long a statement waits for a row's lock (0: ever).
    db_lock_timeout_ms: int = DEFAULT_DB_LOCK_TIMEOUT_MS
    #: ``DB_IDLE_IN_TRANSACTION_TIMEOUT_MS``: PostgreSQL's ``idle_in_transaction_session_timeout`` (0: none);
    #: a session idle that long inside a transaction is ended and its locks released.
    db_idle_in_transaction_timeout_ms: int = DEFAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS
    log_level: str = "INFO"

    # Internal variables: antrian sets them for its own child processes (and tests set them to go faster).
    #: ``ANTRIAN_HEARTBEAT_DIR``: where a worker process beats (set by antrian.runtime.workers for dramatiq).
    antrian_heartbeat_dir: str | None = None
    #: ``ANTRIAN_HEARTBEAT_INTERVAL_S``: seconds between two beats of a worker process.
    antrian_heartbeat_interval_s: float = 10.0
    #: ``ANTRIAN_LOGIN_WINDOW_S``: sync-api's sign-in throttle window: past :data:`LOGIN_FAILURES_ALLOWED` failed
    #: sign-ins from one address (or with one token prefix) within it, sign-ins are refused (429) until it ends.
    antrian_login_window_s: float = 300.0
    #: ``PROMETHEUS_MULTIPROC_BASE``: where each service's metrics folder is made (default: the temp dir).
    prometheus_multiproc_base: str | None = None
    #: ``PROMETHEUS_MULTIPROC_DIR``: this service's metrics folder, once antrian.metrics prepared it.
    prometheus_multiproc_dir: str | None = None

    def require(self, name: str) -> str:
        """Return a setting that this process cannot run without, or raise naming its variable."""
        value: str = getattr(self, name)
        if value in (None, ""):
            raise ConfigError(f"{name.upper()} is required but not set")
        return value

    def metrics_port_for(self, service: str) -> int:
        return self.metrics_port or DEFAULT_METRICS_PORTS[service]

    def payment_status_api_url(self) -> str:
        """``PAYMENT_API_BASE_URL``, or the gateway's sandbox when it is unset."""
        return self.payment_api_base_url or DEFAULT_PAYMENT_API_BASE_URL

    def db_pool_size_for(self, service: str) -> int:
        return self.db_pool_size or DEFAULT_DB_POOL_SIZES[service]


def _text(value: str) -> str | None:
    return value.strip() or None


def _api_token(value: str) -> str | None:
    token = _text(value)
    if token is not None and len(token) < MIN_API_TOKEN_LENGTH:
        raise ValueError(f"must be at least {MIN_API_TOKEN_LENGTH} characters (e.g. python -c "
                         "'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


#: The largest timeout PostgreSQL takes, in milliseconds (its settings are 32-bit integers).
MAX_DB_TIMEOUT_MS = 2_147_483_647


def _milliseconds(value: str) -> int:
    number = int(value)
    if not 0 <= number <= MAX_DB_TIMEOUT_MS:
        raise ValueError(f"must be a whole number of milliseconds between 0 (off) and {MAX_DB_TIMEOUT_MS}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError("must be a port number between 1 and 65535")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _rate(value: str) -> float | None:
    """A rate limit: a positive number per second; empty means none."""
    if not value.strip():
        return None
    number = float(value)
    if not 0 < number < math.inf:
        raise ValueError("must be a positive number per second (or empty: no limit)")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _names(value: str) -> tuple[str, ...]:
    """A comma-separated list of names, blanks and empty items left out."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return lowered

    return parse


def _database_url(value: str) -> str:
    if not value.startswith("postgresql"):
        raise ValueError("must be a postgresql:// URL")
    if not urlsplit(value).path.strip("/"):
        raise ValueError("must name a database (postgresql://user@host:5432/DATABASE)")
    return value.replace("postgresql://", "postgresql+psycopg://", 1) if value.startswith("postgresql://") else value


def _amqp_url(value: str) -> str:
    if not value.startswith(("amqp://", "amqps://")):
        raise ValueError("must be an amqp:// URL")
    return value


def _http_url(value: str) -> str | None:
    value = value.strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    if value and not urlsplit(value).hostname:
        raise ValueError("must name a host")
    return value or None


_PARSERS: dict[str, Any] = {
    "database_url": _database_url,
    "broker_url": _amqp_url,
    "rabbitmq_management_url": _http_url,
    "api_token": _api_token,
    "upstream_base_url": _http_url,
    "upstream_token": _text,
    "upstream_timeout_s": _positive_float,
    "upstream_max_response_bytes": _positive_int,
    "smtp_host": str.strip,
    "smtp_port": _port,
    "smtp_username": _text,
    "smtp_password": _text,
    "smtp_security": _one_of("none", "starttls", "ssl"),
    "smtp_timeout_s": _positive_float,
    "mail_from_address": str.strip,
    "mail_from_name": str.strip,
    "mail_backend": _one_of("smtp", "file"),
    "mail_file_dir": str.strip,
    "booking_expiry_minutes": _positive_int,
    "expiry_sweep_seconds": _positive_int,
    "payment_server_key": _text,
    "payment_simulator": _bool,
    "payment_api_base_url": _http_url,
    "payment_reconcile_seconds": _positive_int,
    "failed_jobs_retention_days": _positive_int,
    "upstream_rate_limit": _rate,
    "smtp_rate_limit": _rate,
    "queue_type": _one_of("quorum", "classic"),
    "queue_delivery_limit": _positive_int,
    "metrics_port": _port,
    "port": _port,
    "host": str.strip,
    "session_cookie_secure": _bool,
    "db_pool_size": _positive_int,
    "db_statement_timeout_ms": _milliseconds,
    "db_lock_timeout_ms": _milliseconds,
    "db_idle_in_transaction_timeout_ms": _milliseconds,
    "log_level": _one_of("debug", "info", "warning", "error"),
    "antrian_heartbeat_dir": _text,
    "antrian_heartbeat_interval_s": _positive_float,
    "antrian_login_window_s": _positive_float,
    "prometheus_multiproc_base": _text,
    "prometheus_multiproc_dir": _text,
}


def _without_password(value: str) -> str:
    """A value safe to print: a URL's password (``scheme://user:password@host``) becomes ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every known variable from ``environ`` (default: the process environment)."""
    values = _parse(Settings, _PARSERS, os.environ if environ is None else environ)
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    return Settings(**values)


def _parse(settings: type, parsers: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in fields(settings):
        variable = item.name.upper()
        raw = environ.get(variable)
        if raw is None:
            continue
        try:
            values[item.name] = parsers[item.name](raw)
        except ValueError as exc:
            # A secret's value is never echoed; a URL's is, without its password.
            shown = "" if item.metadata.get("secret") else f"={_without_password(raw)!r}"
            raise ConfigError(f"{variable}{shown} is not valid: {exc}") from None
    return values


@dataclass(frozen=True, kw_only=True)
class DevSettings:
    """What ``make run`` (dev/run.py) reads beside SPEC's variables: the development stand-ins' ports and folder.

    Build it with :func:`load_dev_settings`; production processes never read these.
    """

    #: ``DEMO_DATA``: seed demo students and tours into an empty database.
    demo_data: bool = True
    #: ``DEV_SCHOOL_API_PORT``: the development school API, started when ``UPSTREAM_BASE_URL`` is unset.
    dev_school_api_port: int = 8081
    #: ``DEV_PAYMENT_GATEWAY_PORT``: the development payment gateway, started when ``PAYMENT_API_BASE_URL`` is unset
    #: and the payment simulator is on.
    dev_payment_gateway_port: int = 8082
    #: ``MAIL_SINK_SMTP_PORT`` and ``MAIL_SINK_PORT``: the development mail sink's SMTP and web ports, started
    #: when ``SMTP_HOST`` and ``SMTP_PORT`` are unset (and ``MAIL_BACKEND`` is smtp).
    mail_sink_smtp_port: int = 1025
    mail_sink_port: int = 8025
    #: ``MAIL_SINK_DIR``: where the mail sink keeps what it got, as .eml files.
    mail_sink_dir: str = "var/mail-sink"
    #: ``DEV_RESTART_ON_EXIT``: names of children (comma-separated, e.g. ``sync-worker,mailer``) that are started
    #: again when they exit, instead of everything being stopped; ``make soak`` kills one now and then.
    dev_restart_on_exit: tuple[str, ...] = ()


_DEV_PARSERS: dict[str, Any] = {
    "demo_data": _bool,
    "dev_school_api_port": _port,
    "dev_payment_gateway_port": _port,
    "mail_sink_smtp_port": _port,
    "mail_sink_port": _port,
    "mail_sink_dir": str.strip,
    "dev_restart_on_exit": _names,
}


def load_dev_settings(environ: Mapping[str, str] | None = None) -> DevSettings:
    """Read ``make run``'s own variables from ``environ`` (default: the process environment)."""
    return DevSettings(**_parse(DevSettings, _DEV_PARSERS, os.environ if environ is None else environ))


def given(variable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``variable`` is set to something other than blanks (rather than left to its default)."""
    return bool((os.environ if environ is None else environ).get(variable, "").strip())


def environment() -> dict[str, str]:
    """A copy of this process's environment, for a launcher that hands it on to the processes it starts."""
    return dict(os.environ)


def export(variables: Mapping[str, str]) -> None:
    """Set variables in this process's environment, for its children and for libraries that read them there.

    prometheus_client and Dramatiq's Prometheus middleware read their folder and port from the
    environment; a Dramatiq worker's processes inherit the heartbeat folder and pool size from it.
    """
    os.environ.update(variables)


__all__ = ["ConfigError", "DevSettings", "Settings", "environment", "export", "given", "load_dev_settings",
           "load_settings", "replace"]
