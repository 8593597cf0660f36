"""Booking emails: the actors, one delivery per email and kind, rendering with its QR code."""
