"""One retry policy type for every actor: attempts, their wording and Dramatiq's options all from one number.

Fast tier: the policy alone, then an actor on Dramatiq's StubBroker run by a real Dramatiq Worker.
"""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.exc import OperationalError

from antrian.runtime.retries import RetryPolicy, never_retried
from booking_expiry.bookings.retries import SWEEP
from mailer.emails.retries import EMAIL
from sync_api.sync.retries import FAN_OUT, STUDENT

pytestmark = pytest.mark.fast


class Flaky(Exception):
    """A failure another attempt may fix."""


class Broken(Exception):
    """A failure no attempt fixes."""


def test_spec_attempts_and_time_limits():
    # SPEC's queue table: 3 attempts for a student and an email, 1 for the sweep; 60 s, 120 s, 300 s
    assert (STUDENT.attempts, STUDENT.time_limit_ms) == (3, 60_000)
    assert (EMAIL.attempts, EMAIL.time_limit_ms) == (3, 120_000)
    assert (SWEEP.attempts, SWEEP.time_limit_ms) == (1, 300_000)
    assert FAN_OUT.attempts > STUDENT.attempts and FAN_OUT.transient is None


def test_the_wording_follows_the_count():
    assert STUDENT.after_all("HTTP 503") == "HTTP 503 (after 3 attempts)"
    assert RetryPolicy(attempts=5, time_limit_ms=1).after_all("x") == "x (after 5 attempts)"
    assert never_retried(time_limit_ms=1).after_all("x") == "x (after 1 attempt)"


def test_only_transient_failures_are_retried_and_only_while_attempts_are_left():
    policy = RetryPolicy(attempts=3, time_limit_ms=1_000, transient=(Flaky,))
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    for always in (Flaky("x"), dramatiq.Retry("again"), TimeLimitExceeded(), lost):
        assert policy.is_transient(always)
        assert policy.should_retry(0, always) and policy.should_retry(1, always)
        assert not policy.should_retry(2, always)  # the third attempt was the last
    assert not policy.is_transient(Broken("x")) and not policy.should_retry(0, Broken("x"))
    assert not never_retried(time_limit_ms=1).should_retry(0, Flaky("x"))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0, time_limit_ms=1)


def test_the_final_attempt_is_read_from_the_message():
    message = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    assert not STUDENT.is_final(message)
    message.options["retries"] = 2
    assert STUDENT.is_final(message)
    assert SWEEP.is_final(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))


@pytest.fixture
def stub_broker():
    broker = StubBroker()
    broker.add_middleware(CurrentMessage())  # as antrian.runtime.broker.make_broker adds it
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def run(stub_broker):
    """Run what is queued on a real Dramatiq worker over the stub broker until it is all done."""

    def run_all() -> None:
        worker = dramatiq.Worker(stub_broker, worker_timeout=50)
        worker.start()
        try:
            stub_broker.join("q", fail_fast=False)
            worker.join()
        finally:
            worker.stop()

    return run_all


@pytest.mark.parametrize(("failure", "attempts"), [(Flaky, 3), (Broken, 1), (KeyError, 1)])
def test_an_actor_with_the_policy_makes_exactly_its_attempts(stub_broker, run, failure, attempts):
    # Given an actor that always fails, with a policy of 3 attempts retrying Flaky only, and no backoff to wait
    policy = RetryPolicy(attempts=3, time_limit_ms=5_000, min_backoff_ms=1, max_backoff_ms=1, transient=(Flaky,),
                         throws=(Broken,))
    calls = []

    @dramatiq.actor(queue_name="q", **policy.actor_options())
    def always_fails() -> None:
        calls.append(policy.final_attempt())
        raise failure("no")

    # When it runs
    always_fails.send()
    run()

    # Then it ran its attempts, and knew which was the last (a thrown or a permanent failure is at once final
    # for Dramatiq, whatever the attempt thinks)
    assert len(calls) == attempts
    if failure is Flaky:
        assert calls == [False, False, True]
    assert stub_broker.dead_letters_by_queue["q"]  # then it is kept, not dropped
