"""Development stand-ins (school API, mail sink) and `make run`: never in a production image."""
