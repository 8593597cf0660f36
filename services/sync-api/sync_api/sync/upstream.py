"""The school's API client: one pooled ``requests`` session per worker thread, errors sorted by what to do."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from antrian.rate_limit import RateLimiter
from sync_api.sync import metrics as worker_metrics
from sync_api.sync.errors import PermanentUpstreamError, TransientUpstreamError

#: The longest ``Retry-After`` we honour, in milliseconds: delayed messages wait in worker memory.
MAX_RETRY_AFTER_MS = 60_000


class SchoolApi:
    """``GET {base_url}/siswa/{idperson}/pembayaran``, answering ``{"status": true, "data": ...}``.

    Parameters:
      base_url(str): the school API's root, without a trailing slash.
      token(str | None): sent as ``Authorization: Bearer ...`` when set.
      timeout_s(float): per request.
      limiter(RateLimiter | None): gives a token right before each request (``UPSTREAM_RATE_LIMIT``); a throttled
        call waits for it inside the job, which costs no attempt.
    """

    def __init__(self, *, base_url: str, token: str | None, timeout_s: float,
                 limiter: RateLimiter | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.limiter = limiter
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["Accept"] = "application/json"
            # Proxies and CA bundle from the environment are looked up once here, not on every
            # request (requests re-reads the environment and ~/.netrc per call when trust_env is on).
            environment = session.merge_environment_settings(self.base_url, {}, None, None, None)
            session.proxies.update(environment["proxies"])
            session.verify = environment["verify"]
            session.trust_env = False
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = session
        return session

    def fetch_pembayaran(self, idperson: int) -> Any:
        """Return the student's ``data``, or raise a Transient/PermanentUpstreamError saying why.

        Raises RateLimitUnavailable when the rate limit gives no token (nothing was sent).
        """
        url = f"{self.base_url}/siswa/{idperson}/pembayaran"
        session = self._session()
        if self.limiter is not None:
            self.limiter.acquire()
        started = time.perf_counter()
        try:
            response = session.get(url, timeout=self.timeout_s)
        except requests.exceptions.SSLError as exc:
            worker_metrics.observe_upstream("tls_error", time.perf_counter() - started)
            raise PermanentUpstreamError(f"TLS error: {_first_line(exc)}") from None
        except requests.Timeout:
            worker_metrics.observe_upstream("timeout", time.perf_counter() - started)
            raise TransientUpstreamError(f"timed out after {self.timeout_s:g}s") from None
        except requests.ConnectionError as exc:
            worker_metrics.observe_upstream("connection_error", time.perf_counter() - started)
            raise TransientUpstreamError(f"connection error: {_first_line(exc)}") from None
        worker_metrics.observe_upstream(_outcome(response.status_code), time.perf_counter() - started)
        return _data_from(response)


def _data_from(response: requests.Response) -> Any:
    status = response.status_code
    if status == 429:
        raise TransientUpstreamError("HTTP 429 Too Many Requests", retry_after_ms=_retry_after_ms(response))
    if status >= 500:
        raise TransientUpstreamError(f"HTTP {status}")
    if status >= 400:
        raise PermanentUpstreamError(f"HTTP {status}: {response.text[:200]}")
    try:
        body = response.json()
    except ValueError:
        raise PermanentUpstreamError(f"response is not JSON: {response.text[:100]!r}") from None
    if not isinstance(body, dict) or not isinstance(body.get("status"), bool):
        raise PermanentUpstreamError("response has no boolean 'status'")
    if body["status"] is False:
        raise PermanentUpstreamError(f"school API refused: {body.get('message') or 'no message'}")
    if "data" not in body:
        raise PermanentUpstreamError("response has status true but no 'data'")
    return body["data"]


def _retry_after_ms(response: requests.Response) -> int | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return int(min(max(seconds, 0) * 1000, MAX_RETRY_AFTER_MS))


def _outcome(status: int) -> str:
    if status == 429:
        return "http_429"
    return "ok" if status < 400 else f"http_{status // 100}xx"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
