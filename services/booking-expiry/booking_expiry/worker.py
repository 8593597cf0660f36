"""booking-expiry's broker module, loaded by ``dramatiq booking_expiry.worker`` in every worker process."""

from antrian.runtime.workers import boot

broker = boot("booking-expiry", "booking_expiry.bookings.actors")
