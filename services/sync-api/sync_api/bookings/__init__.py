"""Tours, bookings and payments: the routes, taking seats, the gateway's notifications, the outbox relay."""
