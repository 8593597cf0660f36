"""antrian: background jobs for a school's payment sync and a travel agency's bookings, on Dramatiq."""

__version__ = "0.1.0"
