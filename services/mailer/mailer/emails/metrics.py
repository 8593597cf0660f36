"""The mailer's own metrics, served beside Dramatiq's by its Prometheus middleware (multiprocess mode).

``PROMETHEUS_MULTIPROC_DIR`` is set by :func:`antrian.runtime.workers.exec_worker` before this module is imported.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

#: ``result``: ``sent``, ``duplicate`` (already sent, skipped), ``outdated`` (an invoice for a booking no
#: longer pending, skipped), ``busy`` (being sent by another attempt: looked at again later, no attempt spent),
#: ``retry`` (will be tried again) or ``failed``.
EMAILS = Counter(
    "antrian_emails_total",
    "Email jobs by kind (invoice, eticket, ...) and result (sent, duplicate, outdated, busy, retry, failed).",
    ["kind", "result"],
)
SMTP_SEND_SECONDS = Histogram(
    "antrian_smtp_send_seconds",
    "Time the transport took to accept an email that it accepted, by kind.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
