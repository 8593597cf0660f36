"""Schemathesis fuzzes the running sync-api from its own OpenAPI document: no 5xx, every answer as documented.

Every route, every check (bodies and queries the document allows must be accepted, what it forbids must be
a 4xx, statuses, content types, headers and bodies must conform), once with the token and once without.
"""

from __future__ import annotations

import subprocess

import pytest
import requests

from tests.support import API_TOKEN, BIN, ROOT

CONFIG = ROOT / "tests" / "sync_api" / "web" / "schemathesis.toml"
#: Examples per route: enough to reach every branch of the models in under a minute here. Without the token
#: every route but the public ones answers 401 before reading anything, so fewer show what there is to see.
EXAMPLES = {True: "40", False: "10"}


def schemathesis(web: str, *headers: str, seed: int, examples: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "st"), "--config-file", str(CONFIG), "run", f"{web}/api/openapi.json",
         "--max-examples", examples, "--seed", str(seed), "--generation-database", "none", "--workers", "1",
         "--request-timeout", "30", "--wait-for-schema", "30", *headers],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


@pytest.fixture
def web(clean, start_web) -> str:
    web = start_web(PAYMENT_SIMULATOR="true")
    # A tour and a booking to find, so that routes with an id reach past their 404.
    token = {"Authorization": f"Bearer {API_TOKEN}"}
    tour = requests.post(f"{web}/api/tours", headers=token, timeout=10, json={
        "name": "Bromo", "quota": 1000, "price": "350000", "starts_at": "2030-01-01T05:00:00+07:00"}).json()
    requests.post(f"{web}/api/bookings", headers=token, timeout=10, json={
        "tour_id": tour["id"], "quantity": 1, "customer_name": "Sari", "customer_email": "sari@example.com"})
    return web


@pytest.mark.parametrize("with_token", [True, False], ids=["with-token", "without-token"])
def test_no_input_gets_a_5xx_and_every_answer_conforms(web, with_token):
    headers = ["-H", f"Authorization: Bearer {API_TOKEN}"] if with_token else []
    result = schemathesis(web, *headers, seed=20261202 + with_token, examples=EXAMPLES[with_token])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
    assert "Tested: " in result.stdout and "failures" not in result.stdout.splitlines()[-1], result.stdout[-5000:]
