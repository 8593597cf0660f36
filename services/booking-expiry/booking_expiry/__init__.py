"""booking-expiry: unpaid bookings expire on a schedule and their seats go back exactly once."""
