"""The sweep's time limit, in a module of its own: the entry point reads it before anything imports metrics."""

#: A sweep may take this long (SPEC: 300 s); a stopping worker waits as long for it to finish.
SWEEP_TIME_LIMIT_MS = 300_000
