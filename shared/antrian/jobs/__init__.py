"""Failed jobs: kept in PostgreSQL when a message runs out of attempts, listed, retried, flushed."""
