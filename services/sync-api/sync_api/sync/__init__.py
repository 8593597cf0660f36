"""Student payment (pembayaran) sync: the routes, the fan-out, each student's job, the school API."""
