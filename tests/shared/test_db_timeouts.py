"""PostgreSQL's timeouts: three settings, and every connection make_engine opens starts with them."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event, text

from antrian.config import load_settings
from antrian.db.engine import make_engine, timeouts
from antrian.errors import ConfigError
from tests.support import DATABASE_URL

VARIABLES = ("DB_STATEMENT_TIMEOUT_MS", "DB_LOCK_TIMEOUT_MS", "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS")


@pytest.mark.fast
def test_the_defaults_bound_statements_and_lock_waits_and_outlast_the_mailers_smtp_send():
    settings = load_settings({})
    assert (settings.db_statement_timeout_ms, settings.db_lock_timeout_ms) == (30_000, 5_000)
    # The mailer idles in its transaction while it talks SMTP, for up to its 120 s time limit.
    assert settings.db_idle_in_transaction_timeout_ms == 300_000 > 120_000
    assert timeouts(settings) == {"statement_timeout_ms": 30_000, "lock_timeout_ms": 5_000,
                                  "idle_in_transaction_timeout_ms": 300_000}


@pytest.mark.fast
def test_values_are_whole_milliseconds_and_0_turns_one_off():
    settings = load_settings({"DB_STATEMENT_TIMEOUT_MS": " 1500 ", "DB_LOCK_TIMEOUT_MS": "0",
                              "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "2147483647"})
    assert timeouts(settings) == {"statement_timeout_ms": 1500, "lock_timeout_ms": 0,
                                  "idle_in_transaction_timeout_ms": 2_147_483_647}


@pytest.mark.fast
@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("value", ["-1", "1.5", "5s", "", "2147483648"])
def test_a_wrong_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert str(caught.value).startswith(f"{variable}={value!r} is not valid")


class Refused(Exception):
    """Raised instead of connecting: the test wants the connection's parameters, not a connection."""


def _connect_parameters(engine: Engine) -> dict:
    seen: dict = {}

    @event.listens_for(engine, "do_connect")
    def capture(dialect, connection_record, cargs, cparams):
        seen.update(cparams)
        raise Refused

    with pytest.raises(Refused):
        engine.connect()
    engine.dispose()
    return seen


@pytest.mark.fast
def test_make_engine_sends_the_timeouts_with_each_connections_startup():
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/nowhere", statement_timeout_ms=1234,
                         lock_timeout_ms=0, idle_in_transaction_timeout_ms=99_000)
    parameters = _connect_parameters(engine)
    assert parameters["options"] == (
        "-c statement_timeout=1234 -c lock_timeout=0 -c idle_in_transaction_session_timeout=99000"
    )
    assert parameters["application_name"] == "antrian"
    # Unnamed, they are the settings' defaults.
    defaults = _connect_parameters(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/nowhere"))
    assert defaults["options"] == (
        "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=300000"
    )


@pytest.mark.fast
@pytest.mark.parametrize("wrong", [-1, 1.5, True, "5s"])
def test_make_engine_refuses_a_timeout_postgresql_would_not_take(wrong):
    with pytest.raises(ValueError, match="whole number of milliseconds"):
        make_engine("postgresql+psycopg://nobody@127.0.0.1:1/nowhere", lock_timeout_ms=wrong)


def _shown(engine: Engine) -> tuple[str, str, str]:
    with engine.connect() as connection:
        return tuple(
            connection.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        )


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_connection_of_make_engine_really_carries_the_settings(infrastructure, autocommit):
    settings = load_settings({"DB_STATEMENT_TIMEOUT_MS": "12000", "DB_LOCK_TIMEOUT_MS": "1500",
                              "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "240000"})
    engine = make_engine(DATABASE_URL, pool_size=1, autocommit=autocommit, **timeouts(settings))
    try:
        assert _shown(engine) == ("12s", "1500ms", "4min")
        # And so does the next connection the pool opens, after the first one was thrown away.
        engine.dispose()
        assert _shown(engine) == ("12s", "1500ms", "4min")
        if not autocommit:  # (an autocommit connection has no transaction for SET LOCAL)
            # A transaction's SET LOCAL (the sweep's, the schedule's claim) still overrides them for itself.
            with engine.connect() as connection, connection.begin():
                connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                assert connection.execute(text("SHOW lock_timeout")).scalar_one() == "10s"
            assert _shown(engine)[1] == "1500ms"
    finally:
        engine.dispose()


def test_the_defaults_and_off_reach_the_database(infrastructure):
    engine = make_engine(DATABASE_URL, pool_size=1)
    off = make_engine(DATABASE_URL, pool_size=1, statement_timeout_ms=0, lock_timeout_ms=0,
                      idle_in_transaction_timeout_ms=0)
    try:
        assert _shown(engine) == ("30s", "5s", "5min")
        assert _shown(off) == ("0", "0", "0")
    finally:
        engine.dispose()
        off.dispose()
