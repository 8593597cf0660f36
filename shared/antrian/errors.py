"""Every error antrian raises on purpose, in one hierarchy."""

from __future__ import annotations


class AntrianError(Exception):
    """Base class for antrian's own errors."""


class ConfigError(AntrianError):
    """Raised when an environment variable is missing or has a value antrian cannot use."""


class DependencyUnavailable(AntrianError):
    """Raised when the database or the broker cannot be reached."""


class RunAlreadyRunning(AntrianError):
    """Raised when a sync run is requested while another one is still running."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"sync run {run_id} is still running")
        self.run_id = run_id


class PublishError(AntrianError):
    """Raised when RabbitMQ refuses (nacks or returns) a message we published with confirms."""
