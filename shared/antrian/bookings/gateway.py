"""The payment gateway's status API: what really happened to an order (Midtrans ``GET /v2/{order_id}/status``).

A notification only says that something happened; this asks. HTTP Basic with the server key as the
user and an empty password. Whatever keeps an answer from coming (no connection, a timeout, a 5xx, a
429, an answer that is not a status) is :class:`GatewayUnavailable`, a 503: nothing changes, and the
gateway sends its notification again later (reconciliation asks again too).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests

from antrian.bookings.payments import TransactionStatus
from antrian.errors import DependencyUnavailable

logger = logging.getLogger(__name__)

#: Seconds to wait for the status API (connect, then read): a notification's answer waits on it.
TIMEOUT_S = (3.05, 10.0)


class GatewayUnavailable(DependencyUnavailable):
    """Raised when the status API gave no usable answer; retry later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StatusApi:
    """Asks the gateway for an order's status.

    Parameters:
      base_url(str): ``PAYMENT_API_BASE_URL``, without a trailing slash.
      server_key(str): ``PAYMENT_SERVER_KEY``.
      session(requests.Session | None): connections to reuse (one per thread that calls).
    """

    def __init__(self, *, base_url: str, server_key: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = (server_key, "")
        self._session = session or requests.Session()
        self._session.trust_env = False

    def status(self, order_id: str) -> TransactionStatus | None:
        """The order's status at the gateway, or None when the gateway knows no transaction for it."""
        url = f"{self.base_url}/v2/{quote(order_id, safe='')}/status"
        body = self._get(url)
        code = str(body.get("status_code", ""))
        if code == "404":
            return None
        if "transaction_status" not in body:  # an error's answer (401, 5xx) carries no transaction
            raise GatewayUnavailable(f"the payment gateway answered {code or 'no status'}: "
                                     f"{str(body.get('status_message', ''))[:200]}")
        try:
            status = TransactionStatus.from_gateway(body)
        except ValueError as exc:
            raise GatewayUnavailable(f"the payment gateway's answer is not a status: {exc}") from None
        if status.order_id != order_id:
            raise GatewayUnavailable(f"the payment gateway answered for order {status.order_id!r}, not {order_id!r}")
        return status

    def settle(self, order_id: str, gross_amount: str) -> None:
        """Have a development gateway settle an order (``POST /dev/orders/{order_id}``): the simulator only."""
        url = f"{self.base_url}/dev/orders/{quote(order_id, safe='')}"
        body = {"order_id": order_id, "transaction_status": "settlement", "fraud_status": "accept",
                "status_code": "200", "gross_amount": gross_amount, "transaction_id": f"simulated-{order_id}"}
        try:
            response = self._session.post(url, json=body, auth=self._auth, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise GatewayUnavailable(f"cannot reach the payment gateway at {self.base_url}: {exc}") from None
        if response.status_code != 200:
            raise GatewayUnavailable(f"the payment gateway at {self.base_url} cannot simulate a payment "
                                     f"(HTTP {response.status_code}); is it the development gateway?")

    def _get(self, url: str) -> dict[str, Any]:
        try:
            response = self._session.get(url, auth=self._auth, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise GatewayUnavailable(f"cannot reach the payment gateway at {self.base_url}: "
                                     f"{type(exc).__name__}") from None
        if response.status_code == 404:
            return {"status_code": "404"}
        if response.status_code == 429:
            raise GatewayUnavailable("the payment gateway is rate limiting us (429)",
                                     retry_after_s=_retry_after(response) or 1.0)
        if response.status_code == 401:
            logger.error("the payment gateway refuses our server key (401): check PAYMENT_SERVER_KEY")
            raise GatewayUnavailable("the payment gateway refused our credentials")
        if response.status_code != 200:
            raise GatewayUnavailable(f"the payment gateway answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise GatewayUnavailable("the payment gateway's answer is not JSON") from None
        if not isinstance(body, dict):
            raise GatewayUnavailable("the payment gateway's answer is not a JSON object")
        return body


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After", "")
    try:
        return min(max(float(raw), 0.0), 60.0)
    except ValueError:
        return None
