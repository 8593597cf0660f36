"""What a worker process builds once from its settings: at boot, or at first use without one."""

from __future__ import annotations

import pytest

from antrian.config import load_settings
from antrian.runtime import per_process
from antrian.runtime.per_process import PerProcess

pytestmark = pytest.mark.fast


def test_configure_makes_it_once_per_call_and_get_returns_it():
    made = []
    state = PerProcess(lambda settings: made.append(settings) or len(made))
    assert state.made is None and made == []
    settings = load_settings({"BOOKING_EXPIRY_MINUTES": "7"})
    assert state.configure(settings) == 1 and state.get() == 1 and state.get() == 1
    assert made == [settings]
    assert state.configure(settings) == 2 and state.made == 2  # a new boot replaces it


def test_without_a_boot_the_first_use_makes_it_from_the_environment(monkeypatch):
    monkeypatch.setattr(per_process, "load_settings", lambda: load_settings({"BOOKING_EXPIRY_MINUTES": "9"}))
    state = PerProcess(lambda settings: settings.booking_expiry_minutes)
    assert state.get() == 9 and state.made == 9
