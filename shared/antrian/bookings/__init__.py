"""Bookings' rules shared by sync-api and booking-expiry: seats taken and given back, the outbox."""
