"""``antrian tokens create|list|revoke`` and the audit trail: every state-changing action carries the name of the
operator who did it, readable with ``GET /api/audit`` and ``antrian audit``."""

from __future__ import annotations

import getpass
import json

import requests
from sqlalchemy import text

from tests.sync_api.access.helpers import antrian, bearer, create_token


def test_a_token_is_shown_once_kept_as_a_hash_listed_without_it_and_revoked_at_once(start_web, clean):
    web = start_web()
    # When an admin creates a token for alice
    created = antrian("tokens", "create", "alice", "--role", "operator")

    # Then its secret is alone on the last line of the output, the note on standard error, and only its hash is kept
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("antrian_") and len(secret) >= 40 and "alice" in created.stderr
    with clean.connect() as connection:
        stored = connection.execute(text("SELECT token_hash, prefix, last_used_at FROM operator_tokens")).one()
    assert secret not in stored.token_hash and secret.startswith(stored.prefix) and stored.last_used_at is None

    # When alice uses it
    assert requests.get(f"{web}/api/queues", headers=bearer(secret), timeout=10).status_code == 200

    # Then the list shows alice's role and last use, and never the secret
    listed = json.loads(antrian("tokens", "list", "--json").stdout)["items"]
    assert [(t["name"], t["role"], t["created_by"]) for t in listed] == [
        ("alice", "operator", f"cli:{getpass.getuser()}")]
    assert listed[0]["last_used_at"] is not None
    table = antrian("tokens", "list").stdout
    assert "alice" in table and secret not in table

    # And a second live token of that name is refused with one line
    again = antrian("tokens", "create", "alice", "--role", "viewer")
    assert again.returncode == 1 and again.stderr.strip() == (
        "Error: a live token is already named 'alice': revoke it first or choose another name")
    wrong_role = antrian("tokens", "create", "bob", "--role", "root")
    assert wrong_role.returncode == 2 and "root" in wrong_role.stderr

    # When the token is revoked
    revoked = antrian("tokens", "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr

    # Then it stops working at once, the name may be given again, and revoking it twice says so
    assert requests.get(f"{web}/api/queues", headers=bearer(secret), timeout=10).status_code == 401
    assert antrian("tokens", "revoke", "alice").stderr.strip() == "Error: no live token is named 'alice'"
    assert antrian("tokens", "list").stdout.count("alice") == 0
    assert "alice" in antrian("tokens", "list", "--all").stdout


def test_every_action_is_audited_with_the_operators_name(start_web, clean):
    web = start_web()
    alice, vera = create_token("alice", "operator"), create_token("vera", "viewer")

    # When alice pauses and resumes a queue, flushes the failed jobs and starts a sync run through the API
    for method, path in [("POST", "/api/queues/emails/pause"), ("POST", "/api/queues/emails/resume"),
                         ("DELETE", "/api/jobs/failed?queue=emails"), ("POST", "/api/sync-runs")]:
        answer = requests.request(method, f"{web}{path}", headers=bearer(alice), timeout=10)
        assert answer.status_code < 300, (path, answer.text)
    # and someone at the terminal pauses a queue, and vera tries to and is refused
    assert antrian("queues", "pause", "booking-expiry").returncode == 0
    refused = requests.post(f"{web}/api/queues/emails/pause", headers=bearer(vera), timeout=10)
    assert refused.status_code == 403

    # Then the audit trail, newest first, names who did each, from where, and on what (vera's refusal changed nothing)
    audit = requests.get(f"{web}/api/audit", headers=bearer(vera), timeout=10).json()
    cli = f"cli:{getpass.getuser()}"
    assert [(e["operator"], e["via"], e["action"], e["target"]) for e in audit["items"]] == [
        (cli, "cli", "pause", "queue:booking-expiry"),
        ("alice", "api", "start", "sync-run:1"),
        ("alice", "api", "flush", "failed-jobs:emails"),
        ("alice", "api", "resume", "queue:emails"),
        ("alice", "api", "pause", "queue:emails"),
        (cli, "cli", "token-create", "token:vera"),
        (cli, "cli", "token-create", "token:alice"),
    ]
    assert audit["total"] == 7 and all(e["at"] for e in audit["items"])
    assert audit["items"][2]["detail"] == {"jobs": 0, "older_than": None}

    # And the terminal reads the same, filtered by operator
    mine = antrian("audit", "--operator", "alice")
    assert mine.returncode == 0, mine.stderr
    lines = mine.stdout.strip().splitlines()
    assert lines[0].split() == ["AT", "OPERATOR", "VIA", "ACTION", "TARGET", "DETAIL"] and len(lines) == 5
    assert all(" alice " in line for line in lines[1:]) and "flush" in lines[2]
    as_json = json.loads(antrian("audit", "--action", "pause", "--json").stdout)
    assert [e["operator"] for e in as_json["items"]] == [cli, "alice"]
