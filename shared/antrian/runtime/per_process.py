"""What a worker process builds once from its settings (an engine, a client) for all its actors' threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from antrian.config import Settings, load_settings

T = TypeVar("T")


class PerProcess(Generic[T]):
    """One ``T`` per process, made from the settings: when the worker boots (:meth:`configure`, called by
    :func:`antrian.runtime.workers.boot`), or at first use when the actors run without that boot.

    Parameters:
      build(Callable[[Settings], T]): makes the object from the settings.
    """

    def __init__(self, build: Callable[[Settings], T]) -> None:
        self._build = build
        self._value: T | None = None

    def configure(self, settings: Settings) -> T:
        """Make the object from ``settings``, replacing any made before."""
        self._value = self._build(settings)
        return self._value

    def get(self) -> T:
        """The object, made from the environment's settings if no boot configured it."""
        value = self._value
        return value if value is not None else self.configure(load_settings())

    @property
    def made(self) -> T | None:
        """The object if it was made, without making it."""
        return self._value
