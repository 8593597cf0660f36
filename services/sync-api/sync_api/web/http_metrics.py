"""Requests by route and status, and their latency, for every route of the app."""

from __future__ import annotations

import time

from flask import Flask, g, request
from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "antrian_http_requests_total", "HTTP requests served by sync-api.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "antrian_http_request_duration_seconds",
    "Time sync-api took to answer, by route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def init_app(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        return response
