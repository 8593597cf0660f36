"""How a process starts: settings checked, the broker made, a worker booted, its heartbeat."""
