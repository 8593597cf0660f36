"""Failed jobs and queues over HTTP: list, show, retry, flush, queue depths."""
