"""Settings come from the environment, and a wrong value names its variable."""

from __future__ import annotations

import pytest

from antrian.config import load_settings
from antrian.errors import ConfigError

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


def test_defaults_follow_the_spec():
    settings = load_settings({})
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/antrian"
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.upstream_timeout_s == 30
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == ("127.0.0.1", 1025, "none")
    assert (settings.booking_expiry_minutes, settings.expiry_sweep_seconds) == (30, 300)
    assert settings.payment_simulator is False
    assert settings.metrics_port_for("sync-worker") == 9191
    assert settings.metrics_port_for("mailer") == 9192
    assert settings.metrics_port_for("booking-expiry") == 9193


def test_values_are_parsed():
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://u@db:5432/x",
            "UPSTREAM_BASE_URL": "https://school.example/api/",
            "UPSTREAM_TIMEOUT_S": "2.5",
            "PAYMENT_SIMULATOR": "true",
            "METRICS_PORT": "9999",
            "SMTP_SECURITY": "STARTTLS",
            "SMTP_TIMEOUT_S": "2",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u@db:5432/x"
    assert settings.upstream_base_url == "https://school.example/api"
    assert settings.upstream_timeout_s == 2.5
    assert settings.payment_simulator is True
    assert settings.metrics_port_for("sync-worker") == 9999
    assert settings.smtp_security == "starttls"
    assert settings.smtp_timeout_s == 2.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://x"),
        ("BROKER_URL", "redis://x"),
        ("UPSTREAM_BASE_URL", "school.example"),
        ("UPSTREAM_TIMEOUT_S", "-1"),
        ("UPSTREAM_TIMEOUT_S", "soon"),
        ("SMTP_PORT", "70000"),
        ("SMTP_SECURITY", "tls"),
        ("SMTP_TIMEOUT_S", "0"),
        ("MAIL_BACKEND", "sendmail"),
        ("BOOKING_EXPIRY_MINUTES", "0"),
        ("PAYMENT_SIMULATOR", "maybe"),
        ("SESSION_COOKIE_SECURE", "sometimes"),
        ("UPSTREAM_MAX_RESPONSE_BYTES", "0"),
    ],
)
def test_a_wrong_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: value})


def test_a_required_setting_names_its_variable():
    with pytest.raises(ConfigError, match="API_TOKEN is required"):
        load_settings({}).require("api_token")


def test_a_short_api_token_is_refused_without_echoing_it():
    # Given a bootstrap token anyone could guess, then one of 32 characters
    with pytest.raises(ConfigError, match="API_TOKEN .*at least 32 characters") as caught:
        load_settings({"API_TOKEN": "a"})
    assert "'a'" not in str(caught.value)
    assert load_settings({"API_TOKEN": "x" * 32}).api_token == "x" * 32


def test_session_cookies_are_secure_and_sync_api_metrics_have_their_own_port_by_default():
    settings = load_settings({})
    assert settings.session_cookie_secure is True
    assert settings.metrics_port_for("sync-api") == 9190 != settings.port
    assert load_settings({"SESSION_COOKIE_SECURE": "false"}).session_cookie_secure is False


@pytest.mark.parametrize("variable", ["DATABASE_URL", "BROKER_URL"])
def test_a_wrong_url_is_named_without_its_password(variable):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: "mysql://app:s3cret@db/x"})
    assert "s3cret" not in str(caught.value)
    assert "app:***@db" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("DATABASE_URL", "postgresql://u@db:5432", "must name a database"),
        ("DATABASE_URL", "postgresql://u@db:5432/", "must name a database"),
        ("RABBITMQ_MANAGEMENT_URL", "localhost:15672", "must be an http:// or https:// URL"),
        ("RABBITMQ_MANAGEMENT_URL", "http://:15672", "must name a host"),
        ("UPSTREAM_BASE_URL", "https:///siswa", "must name a host"),
    ],
)
def test_a_url_that_names_no_database_or_host_is_refused_at_start(variable, value, reason):
    with pytest.raises(ConfigError, match=f"^{variable}=.* is not valid: {reason}"):
        load_settings({variable: value})
