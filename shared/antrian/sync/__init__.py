"""Sync runs: starting one, counting each student's outcome once, finishing it."""
