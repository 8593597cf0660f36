"""``DEV_RESTART_ON_EXIT``: ``make run`` starts a named child again when it exits, instead of stopping everything.

Fast tier: dev/run.py's ``watch`` over stand-in processes, no process started (``make soak`` restarts real ones).
"""

from __future__ import annotations

import threading
import time

import pytest

from antrian.config import load_dev_settings
from dev import run
from dev.run import Child, Running, Signals, watch

pytestmark = pytest.mark.fast


class FakeProcess:
    """What ``watch`` asks of a ``subprocess.Popen``: ``poll()`` is None until ``exit`` is called."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def exit(self, code: int) -> None:
        self.returncode = code


def running(name: str, pid: int, *, age_s: float) -> Running:
    return Running(Child(name, (name,)), FakeProcess(pid), threading.Thread(target=lambda: None), None, None,
                   started_at=time.monotonic() - age_s)


@pytest.fixture(autouse=True)
def no_stop(monkeypatch):
    monkeypatch.setattr(Signals, "stop", False)
    monkeypatch.setattr(Signals, "force", False)


def test_the_names_are_parsed_from_a_comma_separated_list():
    assert load_dev_settings({}).dev_restart_on_exit == ()
    assert load_dev_settings({"DEV_RESTART_ON_EXIT": " sync-worker, mailer,, "}).dev_restart_on_exit \
        == ("sync-worker", "mailer")


def test_a_named_child_that_exits_is_started_again_in_its_place_and_the_others_are_left_alone():
    api, worker = running("sync-api", 10, age_s=60), running("mailer", 11, age_s=60)
    children = [api, worker]
    restarted = []

    def restart(item: Running) -> Running:
        restarted.append(item.process.pid)
        Signals.stop = True  # ends watch's loop once the replacement is in
        return running(item.child.name, 12, age_s=0)

    worker.process.exit(-9)
    assert watch(children, on_ready=lambda: None, restart=restart, restartable=("mailer",)) is None
    assert restarted == [11]
    assert [item.process.pid for item in children] == [10, 12]


def test_a_child_not_named_still_stops_everything():
    children = [running("sync-api", 10, age_s=60), running("mailer", 11, age_s=60)]
    children[0].process.exit(1)
    problem = watch(children, on_ready=lambda: None, restart=pytest.fail, restartable=("mailer",))
    assert problem == "sync-api exited unexpectedly with code 1"


def test_a_named_child_that_dies_soon_after_its_start_is_not_started_again():
    children = [running("mailer", 11, age_s=run.RESTART_MIN_UPTIME_S / 2)]
    children[0].process.exit(2)
    problem = watch(children, on_ready=lambda: None, restart=pytest.fail, restartable=("mailer",))
    assert problem is not None
    assert problem.startswith("mailer exited unexpectedly with code 2 ")
    assert "not started again (DEV_RESTART_ON_EXIT" in problem
