"""The expiry sweep: its actor, the sweep that expires unpaid bookings, its metrics."""
