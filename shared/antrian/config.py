"""Settings from the environment: the one place antrian reads ``os.environ``.

Every variable of SPEC's configuration table is parsed here; a wrong value raises
:class:`ConfigError` naming the variable, and a process turns that into one clear line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from antrian.errors import ConfigError

#: Where each worker serves ``/metrics`` when ``METRICS_PORT`` is unset.
DEFAULT_METRICS_PORTS = {"sync-worker": 9191, "mailer": 9192, "booking-expiry": 9193}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Parsed configuration. Build it with :func:`load_settings`; tests use ``replace()``."""

    # Secrets (and URLs that may hold passwords) stay out of repr(), so a logged Settings leaks none.
    database_url: str = field(default="postgresql+psycopg://postgres@127.0.0.1:5432/antrian", repr=False)
    broker_url: str = field(default="amqp://guest:guest@127.0.0.1:5672/", repr=False)
    #: RabbitMQ's management API, for queue counts and rates; derived from ``broker_url`` when unset.
    rabbitmq_management_url: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    upstream_base_url: str | None = None
    upstream_token: str | None = field(default=None, repr=False)
    upstream_timeout_s: float = 30.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_security: str = "none"
    mail_from_address: str = "noreply@example.com"
    mail_from_name: str = "antrian"
    mail_backend: str = "smtp"
    mail_file_dir: str = "var/mail"
    booking_expiry_minutes: int = 30
    expiry_sweep_seconds: int = 300
    payment_server_key: str | None = field(default=None, repr=False)
    payment_simulator: bool = False
    metrics_port: int | None = None
    port: int = 8000
    host: str = "0.0.0.0"
    #: Connections each process keeps open (default 5); a worker's default is its thread count.
    db_pool_size: int | None = None
    log_level: str = "INFO"

    def require(self, name: str) -> str:
        """Return a setting that this process cannot run without, or raise naming its variable."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigError(f"{name.upper()} is required but not set")
        return value

    def metrics_port_for(self, service: str) -> int:
        return self.metrics_port or DEFAULT_METRICS_PORTS[service]


def _text(value: str) -> str | None:
    return value.strip() or None


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
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


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _one_of(*choices: str):
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return lowered

    return parse


def _database_url(value: str) -> str:
    if not value.startswith("postgresql"):
        raise ValueError("must be a postgresql:// URL")
    return value.replace("postgresql://", "postgresql+psycopg://", 1) if value.startswith("postgresql://") else value


def _amqp_url(value: str) -> str:
    if not value.startswith(("amqp://", "amqps://")):
        raise ValueError("must be an amqp:// URL")
    return value


def _http_url(value: str) -> str | None:
    value = value.strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value or None


_PARSERS: dict[str, Any] = {
    "database_url": _database_url,
    "broker_url": _amqp_url,
    "rabbitmq_management_url": _http_url,
    "api_token": _text,
    "upstream_base_url": _http_url,
    "upstream_token": _text,
    "upstream_timeout_s": _positive_float,
    "smtp_host": str.strip,
    "smtp_port": _port,
    "smtp_username": _text,
    "smtp_password": _text,
    "smtp_security": _one_of("none", "starttls", "ssl"),
    "mail_from_address": str.strip,
    "mail_from_name": str.strip,
    "mail_backend": _one_of("smtp", "file"),
    "mail_file_dir": str.strip,
    "booking_expiry_minutes": _positive_int,
    "expiry_sweep_seconds": _positive_int,
    "payment_server_key": _text,
    "payment_simulator": _bool,
    "metrics_port": _port,
    "port": _port,
    "host": str.strip,
    "db_pool_size": _positive_int,
    "log_level": _one_of("debug", "info", "warning", "error"),
}


def _without_password(value: str) -> str:
    """A value safe to print: a URL's password (``scheme://user:password@host``) becomes ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every known variable from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in fields(Settings):
        variable = item.name.upper()
        raw = environ.get(variable)
        if raw is None:
            continue
        try:
            values[item.name] = _PARSERS[item.name](raw)
        except ValueError as exc:
            raise ConfigError(f"{variable}={_without_password(raw)!r} is not valid: {exc}") from None
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    return Settings(**values)


__all__ = ["ConfigError", "Settings", "load_settings", "replace"]
