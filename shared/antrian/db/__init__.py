"""The database: engines and disconnect retries, the models (every table), and the migrations."""
