"""RateLimiter on the real PostgreSQL: one budget for threads and OS processes, no cost when unset, bounded waits."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import event, text

from antrian.config import load_settings
from antrian.errors import ConfigError, DependencyUnavailable, RateLimitUnavailable
from antrian.rate_limit import LEASE_S, RateLimiter
from tests.support import DATABASE_URL, busiest_second, free_port

SETTINGS = replace(load_settings({}), database_url=DATABASE_URL)
#: A database nobody listens on: a limiter that tried to reach it would fail.
NOWHERE = replace(SETTINGS, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/antrian")


def _take_tokens(database_url: str, name: str, rate: float, threads: int, ready, go, seconds: float,
                 results) -> None:
    """In a spawned process: ``threads`` threads take tokens of one limit for ``seconds``; the times go to ``results``.

    (``database_url`` is passed on: the test database's name is made from the test process's id.)
    """
    limiter = RateLimiter(name, rate, settings=replace(SETTINGS, database_url=database_url))
    ready.put(True)
    go.wait(30)
    end = time.monotonic() + seconds  # CLOCK_MONOTONIC is one clock for every process of the machine
    taken: list[float] = []

    def work() -> None:
        while time.monotonic() < end:
            limiter.acquire()
            taken.append(time.monotonic())

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    limiter.close()
    results.put(taken)


def test_threads_of_several_processes_share_one_limit(infrastructure):
    # Given three OS processes of six threads each, all taking tokens of one 100/s limit as fast as they can
    rate, processes, seconds = 100.0, 3, 3.0
    name = f"test-{uuid.uuid4().hex[:8]}"
    spawn = multiprocessing.get_context("spawn")
    ready, results, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    children = [spawn.Process(target=_take_tokens, args=(DATABASE_URL, name, rate, 6, ready, go, seconds, results))
                for _ in range(processes)]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=60)

    # When they start together
    go.set()
    times = [at for _ in children for at in results.get(timeout=60)]
    for child in children:
        child.join(10)

    # Then no 1-second window saw more than the rate plus two leases (5 tokens each at 100/s)...
    most = RateLimiter(name, rate, settings=SETTINGS).most
    assert most == round(rate * LEASE_S) == 2  # 2% of the limit
    assert busiest_second(times) <= rate + 2 * most, busiest_second(times)
    # ... nor over the whole time (the last calls run on past the 3 s: they waited for their windows) ...
    span = max(times) - min(times)
    assert len(times) <= rate * span + 2 * most, (len(times), span)
    # ... and the limit was used, not undershot
    assert len(times) >= rate * seconds * 0.9, len(times)


@pytest.mark.fast
def test_without_a_rate_the_limiter_costs_nothing():
    # Given a limiter with no rate, pointed at a database that does not exist
    limiter = RateLimiter("upstream", None, settings=NOWHERE)

    # When many tokens are taken
    started = time.perf_counter()
    waits = {limiter.acquire() for _ in range(100_000)}

    # Then none waited, no SQL was sent (it would have failed), no engine was even made
    assert waits == {0.0}
    assert limiter._engine is None
    assert time.perf_counter() - started < 0.5


def test_a_database_that_is_down_gives_the_transient_error(infrastructure):
    # Given a limit whose database cannot be reached, and two threads that want a token at once
    limiter = RateLimiter("upstream", 100, settings=NOWHERE)
    errors: list[BaseException] = []

    def take() -> None:
        try:
            limiter.acquire()
        except BaseException as exc:  # noqa: BLE001 - kept for the assertion
            errors.append(exc)

    # When they ask
    started = time.monotonic()
    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then each gets the transient error (a job would be retried as for any database outage), promptly
    assert len(errors) == 2
    assert all(isinstance(error, RateLimitUnavailable) and isinstance(error, DependencyUnavailable)
               for error in errors)
    assert "cannot reserve tokens in PostgreSQL" in str(errors[0])
    assert time.monotonic() - started < 15


def test_tokens_of_a_window_that_is_over_are_not_used(engine):
    # Given a lease with a token left: the first call reserves 1 token, the second a lease of 2 and takes one
    name = f"test-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(name, 100, settings=SETTINGS)

    def tat():
        with engine.connect() as connection:
            return connection.execute(text("SELECT tat FROM rate_limits WHERE name = :name"), {"name": name}).scalar()

    limiter.acquire()
    limiter.acquire()
    assert limiter._left == 1
    reserved = tat()

    # When the lease's window is over before the next call
    time.sleep(limiter.lease_s * 2)
    limiter.acquire()

    # Then that call reserved a new lease in PostgreSQL instead of using the stale token
    assert tat() > reserved
    limiter.close()


def test_no_thread_waits_longer_than_the_bound(infrastructure):
    # Given a limit of 1/s whose only token of this second is taken
    limiter = RateLimiter(f"test-{uuid.uuid4().hex[:8]}", 1, settings=SETTINGS, max_wait_s=0.3)
    limiter.acquire()

    # When another token is asked for, due in a second
    started = time.monotonic()
    with pytest.raises(RateLimitUnavailable) as caught:
        limiter.acquire()

    # Then the call gives up at once, with a clear transient error, instead of waiting past its bound
    assert time.monotonic() - started < 0.3
    assert "gave no token within 0.3s" in str(caught.value)
    limiter.close()


def test_a_limit_far_above_the_rate_costs_a_few_reservations(infrastructure):
    # Given a limit of 100,000/s, its first lease taken, and every statement on its connection counted
    limiter = RateLimiter(f"test-{uuid.uuid4().hex[:8]}", 100_000, settings=SETTINGS)
    limiter.acquire()
    statements: list[str] = []
    event.listen(limiter._engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    # When two threads take 20,000 tokens
    def take() -> None:
        for _ in range(10_000):
            limiter.acquire()

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then a few dozen reservations served them (leases double up to 2,000 tokens), not one per token
    assert limiter.most == round(100_000 * LEASE_S) == 2_000
    assert 1 <= len(statements) <= 100, len(statements)
    assert all("rate_limits" in statement for statement in statements)
    limiter.close()


@pytest.mark.fast
@pytest.mark.parametrize("variable", ["UPSTREAM_RATE_LIMIT", "SMTP_RATE_LIMIT"])
def test_the_rate_settings_are_positive_numbers_and_empty_means_no_limit(variable):
    field = variable.lower()
    assert getattr(load_settings({}), field) is None
    assert getattr(load_settings({variable: " "}), field) is None
    assert getattr(load_settings({variable: "100"}), field) == 100.0
    assert getattr(load_settings({variable: "0.5"}), field) == 0.5
    for wrong in ("0", "-3", "many", "inf", "nan"):
        with pytest.raises(ConfigError) as caught:
            load_settings({variable: wrong})
        assert str(caught.value).startswith(f"{variable}={wrong!r} is not valid")
