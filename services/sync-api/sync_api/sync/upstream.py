"""The school's API client: one urllib3 connection pool per worker process, errors sorted by what to do.

urllib3 directly, not a ``requests`` session: at a few thousand students a second, requests' own work per call
(preparing the request, merging settings, cookies, hooks) cost the sync worker a fifth of its CPU (make profile).
The environment's proxy and CA bundle are still read as requests reads them, once.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import certifi
import requests
import urllib3
from requests.utils import select_proxy
from urllib3 import exceptions as urllib3_exceptions

from antrian.rate_limit import RateLimiter
from sync_api.sync import metrics as worker_metrics
from sync_api.sync.errors import PermanentUpstreamError, TransientUpstreamError

#: The longest ``Retry-After`` we honour, in milliseconds: delayed messages wait in worker memory.
MAX_RETRY_AFTER_MS = 60_000
#: A connection that failed, or broke while the answer arrived: worth another attempt.
_BROKEN = (urllib3_exceptions.HTTPError, OSError)
#: ``UPSTREAM_MAX_RESPONSE_BYTES``'s default.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
#: Idle connections a worker process keeps to the school API (one per thread it runs, up to this; more may be
#: open at once, and those past it are closed when given back).
POOL_CONNECTIONS = 32


class SchoolApi:
    """``GET {base_url}/siswa/{idperson}/pembayaran``, answering ``{"status": true, "data": ...}``.

    Parameters:
      base_url(str): the school API's root, without a trailing slash.
      token(str | None): sent as ``Authorization: Bearer ...`` when set.
      timeout_s(float): per request: the connection, each read, and the whole answer's arrival.
      max_response_bytes(int): the largest answer read (``UPSTREAM_MAX_RESPONSE_BYTES``); a larger one is not read
        further and fails the student for good. Redirects are never followed: a 3xx fails the student too.
      limiter(RateLimiter | None): gives a token right before each request (``UPSTREAM_RATE_LIMIT``); a throttled
        call waits for it inside the job, which costs no attempt.
    """

    def __init__(self, *, base_url: str, token: str | None, timeout_s: float,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, limiter: RateLimiter | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.limiter = limiter
        self.pool = _pool_for(self.base_url)
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._headers = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate",
                         "User-Agent": "antrian-sync-worker"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def fetch_pembayaran(self, idperson: int) -> Any:
        """Return the student's ``data``, or raise a Transient/PermanentUpstreamError saying why.

        Raises RateLimitUnavailable when the rate limit gives no token (nothing was sent).
        """
        url = f"{self.base_url}/siswa/{idperson}/pembayaran"
        if self.limiter is not None:
            self.limiter.acquire()
        started = time.perf_counter()
        outcome = "ok"
        try:
            # Redirects are not followed (a 3xx fails the student), and the body is read here, at most
            # max_response_bytes of it, within the request's timeout.
            response = self.pool.request("GET", url, headers=self._headers, timeout=self._timeout, retries=False,
                                         redirect=False, preload_content=False, decode_content=True)
            try:
                outcome = _outcome(response.status)
                return self._data_from(response, started + self.timeout_s)
            except BaseException:
                # Unread or half-read: the connection is closed, never reused for the next student.
                response.close()
                raise
            finally:
                response.release_conn()
        except urllib3_exceptions.SSLError as exc:
            outcome = "tls_error"
            raise PermanentUpstreamError(f"TLS error: {_first_line(exc)}") from None
        except urllib3_exceptions.NewConnectionError as exc:  # a ConnectTimeoutError by class, but refused
            outcome = "connection_error"
            raise TransientUpstreamError(f"connection error: {_first_line(exc)}") from None
        except (urllib3_exceptions.TimeoutError, TimeoutError, _Deadline):
            outcome = "timeout"
            raise TransientUpstreamError(f"timed out after {self.timeout_s:g}s") from None
        except _BROKEN as exc:
            outcome = "connection_error"
            raise TransientUpstreamError(f"connection error: {_first_line(exc)}") from None
        except _TooLarge:
            outcome = "too_large"
            raise PermanentUpstreamError(
                f"school API answer is larger than {self.max_response_bytes} bytes (UPSTREAM_MAX_RESPONSE_BYTES)"
            ) from None
        finally:
            worker_metrics.observe_upstream(outcome, time.perf_counter() - started)

    def _data_from(self, response: urllib3.BaseHTTPResponse, deadline: float) -> Any:
        status = response.status
        if status == 429:
            _drain(response, deadline)
            raise TransientUpstreamError("HTTP 429 Too Many Requests", retry_after_ms=_retry_after_ms(response))
        if status >= 500:
            _drain(response, deadline)
            raise TransientUpstreamError(f"HTTP {status}")
        if 300 <= status < 400:
            location = response.headers.get("Location")
            target = f"redirect to {location[:200]!r}" if location else "redirect without a Location"
            raise PermanentUpstreamError(f"school API answered {status} ({target}); redirects are not followed")
        if status >= 400:
            head = _read_body(response, deadline, _ERROR_TEXT_BYTES, cut=True)
            raise PermanentUpstreamError(f"HTTP {status}: {_text(head)[:200]}")
        body = _read_body(response, deadline, self.max_response_bytes)
        try:
            answer = json.loads(body)
        except ValueError:
            raise PermanentUpstreamError(f"response is not JSON: {_text(body[:100])!r}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), bool):
            raise PermanentUpstreamError("response has no boolean 'status'")
        if answer["status"] is False:
            raise PermanentUpstreamError(f"school API refused: {answer.get('message') or 'no message'}")
        if "data" not in answer:
            raise PermanentUpstreamError("response has status true but no 'data'")
        return answer["data"]


def _pool_for(base_url: str) -> urllib3.PoolManager:
    """A pool for ``base_url`` with the proxy and CA bundle the environment names, as requests would pick them
    (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ...), read once."""
    environment = requests.Session().merge_environment_settings(base_url, {}, None, None, None)
    verify = environment["verify"]
    tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if verify is False else {
        "cert_reqs": "CERT_REQUIRED", "ca_certs": verify if isinstance(verify, str) else certifi.where()}
    proxy = select_proxy(base_url, environment["proxies"])
    if proxy:
        return urllib3.ProxyManager(proxy, num_pools=1, maxsize=POOL_CONNECTIONS, block=False, **tls)
    return urllib3.PoolManager(num_pools=1, maxsize=POOL_CONNECTIONS, block=False, **tls)


class _TooLarge(Exception):
    """The answer's body is longer than allowed."""


class _Deadline(Exception):
    """The request's timeout passed while its body was still arriving."""


#: Bytes asked of the socket per read; an answer of a few KiB arrives in one.
_CHUNK_BYTES = 64 * 1024
#: The most of a 4xx body read for its reason (the reason keeps 200 characters of it).
_ERROR_TEXT_BYTES = 4096
#: The most of a 429 or 5xx body read (and dropped) so that its connection can be reused; a longer one is closed.
_DRAIN_BYTES = 64 * 1024


def _read_body(response: urllib3.BaseHTTPResponse, deadline: float, limit: int, *, cut: bool = False) -> bytes:
    """The body (decoded as its Content-Encoding says), read as it arrives until ``deadline`` (perf_counter).

    Raises _TooLarge as soon as it is known to pass ``limit`` bytes (its Content-Length, or what arrived), or with
    ``cut`` answers its first ``limit`` bytes then (the rest unread: the caller closes the response). Raises
    _Deadline when ``deadline`` passes, and urllib3's errors for a broken connection or read timeout.
    """
    length = response.headers.get("Content-Length")
    expected = int(length) if length is not None and length.isdigit() else None
    if not cut and expected is not None and expected > limit:
        raise _TooLarge
    if "Content-Encoding" in response.headers:
        expected = None  # the length is the encoded one's
    raw = response
    # The socket waits no longer than the request's time left: a body that trickles in (each read within the
    # per-read timeout) still ends at the deadline. Its own timeout is put back for the connection's next request.
    sock = getattr(raw.connection, "sock", None)
    per_read = sock.gettimeout() if sock is not None else None
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise _Deadline
            if sock is not None:
                sock.settimeout(remaining)
            # read1: what has arrived (up to a chunk), without waiting for the chunk to fill.
            chunk = raw.read1(_CHUNK_BYTES, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                if cut:
                    chunks.append(chunk)
                    return b"".join(chunks)[:limit]
                raise _TooLarge
            chunks.append(chunk)
            if size == expected:  # all of it: urllib3 gave the connection back already; no read to see the end
                return b"".join(chunks)
    finally:
        if sock is not None and sock.fileno() != -1:
            sock.settimeout(per_read)


def _drain(response: urllib3.BaseHTTPResponse, deadline: float) -> None:
    """Read a short error body to its end so that the connection is reused; close a long one instead."""
    try:
        _read_body(response, deadline, _DRAIN_BYTES)
    except (_TooLarge, _Deadline, urllib3_exceptions.HTTPError):
        response.close()


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _retry_after_ms(response: urllib3.BaseHTTPResponse) -> int | None:
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
    return "ok" if status < 300 else f"http_{status // 100}xx"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
