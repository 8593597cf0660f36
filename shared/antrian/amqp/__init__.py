"""Low-level AMQP: connection parameters that fail fast, and a publisher that pipelines confirms."""
