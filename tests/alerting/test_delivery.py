"""End to end: the real Alertmanager (Debian's), running the compose routing with only its webhook URLs pointed at a
local receiver and its timings shortened, gets antrian's alerts on its API the way Prometheus sends them and
delivers them as Slack and Discord would receive them: a critical one to both, a warning to Slack only, and a
warning that a critical alert of the same queue explains not at all (inhibited: Alertmanager's API says by what).

The alerts carry the labels and annotations of k8s/base/observability/alerts.yaml (Prometheus' templates filled in
here), so the messages are the ones people will read. Each test runs its own Alertmanager and receiver."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.alerting.routing import (
    ALERTMANAGER,
    DISCORD_KEY,
    SLACK,
    SLACK_AND_DISCORD,
    SLACK_KEY,
    alert_rules,
    compose_config,
    require_alertmanager,
    with_timings,
    with_urls,
    write,
)
from tests.support import free_port, show_output_if_failed, wait_until

NAMESPACE = "antrian-e2e"
#: The test's timings: a first notification within a second, updates a second apart; repeats as configured.
FAST = {"group_wait": "1s", "group_interval": "1s"}
DELIVERY_TIMEOUT = 30


# ------------------------------------------------------------------------------------- the webhook receiver

@dataclass
class Received:
    path: str
    body: dict


@dataclass
class WebhookReceiver:
    """Slack and Discord on loopback: every POST's JSON body is kept, by path (/slack, /discord)."""

    server: ThreadingHTTPServer
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def received(self, path: str) -> list[dict]:
        with self.lock:
            return [message.body for message in self.messages if message.path == path]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    holder: dict[str, WebhookReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with holder["receiver"].lock:
                holder["receiver"].messages.append(Received(self.path, json.loads(body)))
            # Slack's webhook answers 200 "ok", Discord's 204; Alertmanager takes any 2xx
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["receiver"] = WebhookReceiver(server)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield holder["receiver"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -------------------------------------------------------------------------------------------- Alertmanager

@dataclass
class Alertmanager:
    url: str
    log: Path

    def post(self, *alerts: dict) -> None:
        response = requests.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=10)
        assert response.status_code == 200, response.text

    def alerts(self, alertname: str) -> list[dict]:
        response = requests.get(f"{self.url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'},
                                timeout=10)
        response.raise_for_status()
        return response.json()

    def groups(self) -> list[dict]:
        response = requests.get(f"{self.url}/api/v2/alerts/groups", timeout=10)
        response.raise_for_status()
        return response.json()

    def notifications(self, integration: str) -> float:
        """How many notifications Alertmanager has sent through ``integration`` (its own metric)."""
        page = requests.get(f"{self.url}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(page) for sample in family.samples
                   if sample.name == "alertmanager_notifications_total"
                   and sample.labels.get("integration") == integration)


@pytest.fixture
def alertmanager(receiver, tmp_path, request) -> Iterator[Alertmanager]:
    require_alertmanager()
    # The real routing tree, inhibitions and message templates; only where it posts and how soon are changed
    config = with_timings(with_urls(compose_config(), {SLACK_KEY: f"{receiver.url}/slack",
                                                       DISCORD_KEY: f"{receiver.url}/discord"}), **FAST)
    config_file = write(config, tmp_path / "alertmanager.yml")
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(ALERTMANAGER), f"--config.file={config_file}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
            stdout=output, stderr=subprocess.STDOUT)
    try:
        instance = Alertmanager(f"http://127.0.0.1:{port}", log)
        wait_until(lambda: process.poll() is not None or _ready(instance.url), timeout=30,
                   what="Alertmanager to be ready")
        assert process.poll() is None, f"Alertmanager exited with {process.returncode}:\n{log.read_text()}"
        yield instance
    finally:
        show_output_if_failed(request, {"alertmanager": lambda: log.read_text(errors="replace")})
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


# ------------------------------------------------------------------------------------------------ alerts

def firing(alertname: str, **labels: str) -> dict:
    """The alert as Prometheus posts it: the rule's labels and annotations, its templates filled in."""
    [rule] = [rule for rule in alert_rules() if rule["alert"] == alertname]
    labels = {"alertname": alertname, "namespace": NAMESPACE, **rule["labels"], **labels}

    def fill(text: str) -> str:
        text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda match: labels.get(match[1], ""), text)
        return re.sub(r"\{\{\s*\$value[^}]*\}\}", "7", text)

    return {"labels": labels, "annotations": {name: fill(text) for name, text in rule["annotations"].items()},
            "startsAt": datetime.now(UTC).isoformat(), "generatorURL": "http://prometheus.test/graph"}


def resolved(alert: dict) -> dict:
    return {**alert, "endsAt": datetime.now(UTC).isoformat()}


def slack_messages(receiver: WebhookReceiver, alertname: str, **labels: str) -> list[dict]:
    """Slack messages about ``alertname`` (title text), whose titles name each of ``labels``' values."""
    found = []
    for body in receiver.received("/slack"):
        titles = " ".join(attachment.get("title", "") for attachment in body.get("attachments", []))
        if alertname in titles and all(value in titles for value in labels.values()):
            found.append(body)
    return found


def discord_messages(receiver: WebhookReceiver, alertname: str) -> list[dict]:
    return [body for body in receiver.received("/discord")
            if any(alertname in embed.get("title", "") for embed in body.get("embeds", []))]


# ------------------------------------------------------------------------------------------------- tests

def test_a_critical_alert_reaches_slack_and_discord_in_their_formats_and_so_does_its_end(alertmanager, receiver):
    alert = firing("AntrianQueueNoConsumers", queue="emails")
    alertmanager.post(alert)

    [slack] = wait_until(lambda: slack_messages(receiver, "AntrianQueueNoConsumers", queue="emails"),
                         timeout=DELIVERY_TIMEOUT, what="the critical alert in Slack")
    [discord] = wait_until(lambda: discord_messages(receiver, "AntrianQueueNoConsumers"),
                           timeout=DELIVERY_TIMEOUT, what="the critical alert in Discord")

    # Slack's incoming-webhook format: attachments with a title, a text and a colour
    [attachment] = slack["attachments"]
    assert attachment["title"] == f"[FIRING:1] AntrianQueueNoConsumers on emails ({NAMESPACE})"
    assert attachment["color"] == "danger"
    assert "*Queue emails has no consumers*" in attachment["text"], attachment["text"]
    assert "No worker has consumed queue emails for 5 minutes" in attachment["text"]
    assert "*Runbook*" in attachment["text"] and "What to do:" in attachment["text"], "people get the runbook"
    # Discord's webhook format: an embed with a title and a description
    [embed] = discord["embeds"]
    assert embed["title"] == attachment["title"]
    assert "**Queue emails has no consumers**" in embed["description"], embed["description"]
    [group] = alertmanager.groups()
    assert group["receiver"]["name"] == SLACK_AND_DISCORD

    # Once it ends, both channels say so (send_resolved)
    alertmanager.post(resolved(alert))
    [slack_end] = wait_until(lambda: [body for body in slack_messages(receiver, "AntrianQueueNoConsumers")
                                      if "[RESOLVED]" in body["attachments"][0]["title"]],
                             timeout=DELIVERY_TIMEOUT, what="the resolved alert in Slack")
    assert slack_end["attachments"][0]["color"] == "good"
    wait_until(lambda: [body for body in discord_messages(receiver, "AntrianQueueNoConsumers")
                        if "[RESOLVED]" in body["embeds"][0]["title"]],
               timeout=DELIVERY_TIMEOUT, what="the resolved alert in Discord")


def test_a_warning_reaches_slack_only(alertmanager, receiver):
    alertmanager.post(firing("AntrianFailedJobsStored", queue="sync-pembayaran", actor="sync_student_payment"),
                      firing("AntrianFailedJobsStored", queue="sync-pembayaran", actor="other_actor"))

    [slack] = wait_until(lambda: slack_messages(receiver, "AntrianFailedJobsStored", queue="sync-pembayaran"),
                         timeout=DELIVERY_TIMEOUT, what="the warning in Slack")
    # One message for the queue's two actors (grouped by alert name and queue), in the warning's colour
    [attachment] = slack["attachments"]
    assert attachment["title"] == f"[FIRING:2] AntrianFailedJobsStored on sync-pembayaran ({NAMESPACE})"
    assert attachment["color"] == "warning"
    assert "sync_student_payment" in attachment["text"] and "other_actor" in attachment["text"]

    # Not to Discord: the only group goes to the Slack-only receiver, which has no Discord integration, and
    # Alertmanager has sent nothing to Discord
    [group] = alertmanager.groups()
    assert group["receiver"]["name"] == SLACK
    assert alertmanager.notifications("slack") >= 1
    assert alertmanager.notifications("discord") == 0
    assert receiver.received("/discord") == []


def test_a_queue_without_consumers_inhibits_the_warnings_of_that_queue_only(alertmanager, receiver):
    cause = firing("AntrianQueueNoConsumers", queue="emails")
    alertmanager.post(cause)
    wait_until(lambda: slack_messages(receiver, "AntrianQueueNoConsumers", queue="emails"),
               timeout=DELIVERY_TIMEOUT, what="the critical alert in Slack")
    alertmanager.post(firing("AntrianQueueBacklogGrowing", queue="emails"),
                      firing("AntrianQueueBacklogGrowing", queue="sync-pembayaran"))

    # The other queue's backlog is news: delivered
    wait_until(lambda: slack_messages(receiver, "AntrianQueueBacklogGrowing", queue="sync-pembayaran"),
               timeout=DELIVERY_TIMEOUT, what="the other queue's warning in Slack")

    # emails' own backlog is explained by its missing consumers: suppressed, inhibited by that alert
    [cause_now] = alertmanager.alerts("AntrianQueueNoConsumers")

    def inhibited() -> dict | None:
        by_queue = {item["labels"]["queue"]: item for item in alertmanager.alerts("AntrianQueueBacklogGrowing")}
        status = by_queue.get("emails", {}).get("status", {})
        return status if status.get("inhibitedBy") else None

    status = wait_until(inhibited, timeout=DELIVERY_TIMEOUT, what="emails' backlog warning to be inhibited")
    assert status["state"] == "suppressed"
    assert status["inhibitedBy"] == [cause_now["fingerprint"]]
    by_queue = {item["labels"]["queue"]: item for item in alertmanager.alerts("AntrianQueueBacklogGrowing")}
    other = by_queue["sync-pembayaran"]["status"]
    assert other["state"] == "active" and not other["inhibitedBy"] and not other["silencedBy"], other
    assert slack_messages(receiver, "AntrianQueueBacklogGrowing", queue="emails") == []

    # Once the cause ends, the warning that outlived it is delivered after all
    alertmanager.post(resolved(cause))
    wait_until(lambda: slack_messages(receiver, "AntrianQueueBacklogGrowing", queue="emails"),
               timeout=DELIVERY_TIMEOUT, what="emails' backlog warning once its cause is resolved")
