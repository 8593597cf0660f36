"""The three roles, each allowing what the one before it does and more."""

from __future__ import annotations

#: ``viewer`` reads; ``operator`` also retries, flushes, cancels, resumes, pauses and resends (and starts runs,
#: makes bookings); ``admin`` also manages tokens.
ROLES = ("viewer", "operator", "admin")


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what needs ``needed``."""
    return ROLES.index(role) >= ROLES.index(needed)
