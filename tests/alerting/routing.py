"""antrian's Alertmanager routing as the tests read it: the compose file, the Kubernetes AlertmanagerConfig rendered
into the same form (the way prometheus-operator renders it, webhook URLs from files instead of inlined), and the
copies the tests run (URLs pointed elsewhere, timings shortened; nothing else changed).

Debian's Alertmanager is 0.25: it has discord_configs but not their ``webhook_url_file`` (0.26), so every copy
that amtool or the Debian alertmanager reads has its URL files replaced by inline URLs (:func:`with_urls`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

COMPOSE_CONFIG = ROOT / "deploy" / "compose" / "alertmanager" / "alertmanager.yml"
WEBHOOK_FILES = ROOT / "deploy" / "compose" / "alertmanager" / "webhooks"
KUBERNETES_CONFIG = ROOT / "k8s" / "base" / "observability" / "alertmanager-config.yaml"
ALERTS = ROOT / "k8s" / "base" / "observability" / "alerts.yaml"
#: Debian's prometheus-alertmanager package (scripts/ensure-alertmanager.sh installs it).
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")
#: Where the compose Alertmanager finds the webhook URL files (its mount of WEBHOOK_FILES).
WEBHOOK_DIR = "/etc/alertmanager/webhooks"
#: The Kubernetes Secret with the webhook URLs, and its keys (the compose files have the same names).
WEBHOOK_SECRET = "antrian-alert-webhooks"
SLACK_KEY, DISCORD_KEY = "slack-webhook-url", "discord-webhook-url"
#: The receivers: every alert goes to Slack, a critical one to Discord as well.
SLACK, SLACK_AND_DISCORD = "slack", "slack-and-discord"
#: A matcher as Alertmanager writes it: ``name="value"``, ``name=~"regex"`` (quotes optional).
_MATCHER = re.compile(r'\s*(?P<name>\w+)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^"\s]*)\s*')


def require_alertmanager() -> None:
    """Fail (never skip) when Debian's Alertmanager is missing."""
    missing = [str(path) for path in (ALERTMANAGER, AMTOOL) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/ensure-alertmanager.sh (make test does)")


def version(binary: Path) -> tuple[int, ...]:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\d+)\.(\d+)\.(\d+)", result.stdout + result.stderr)
    assert match, f"{binary} --version printed no version: {result.stdout}{result.stderr}"
    return tuple(int(part) for part in match.groups())


def compose_config() -> dict:
    # Through JSON: the file's YAML aliases (one Slack config for two receivers) become copies of their own
    return json.loads(json.dumps(yaml.safe_load(COMPOSE_CONFIG.read_text())))


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["spec"]["groups"] for rule in group["rules"]]


def parse_matcher(text: str) -> tuple[str, str, str]:
    match = _MATCHER.fullmatch(text)
    assert match, f"not a matcher: {text!r}"
    value = match["value"]
    if value.startswith('"'):
        value = yaml.safe_load(value)  # a double-quoted YAML string unescapes as Alertmanager's matcher does
    return match["name"], match["op"], value


# ------------------------------------------------------------- the AlertmanagerConfig, as the operator renders it

_ROUTE_FIELDS = {"receiver": "receiver", "groupBy": "group_by", "groupWait": "group_wait",
                 "groupInterval": "group_interval", "repeatInterval": "repeat_interval", "continue": "continue"}
_SLACK_FIELDS = {"sendResolved": "send_resolved", "color": "color", "title": "title", "text": "text"}
_DISCORD_FIELDS = {"sendResolved": "send_resolved", "title": "title", "message": "message"}


def _matchers(items: list[dict]) -> list[str]:
    rendered = []
    for item in items:
        operator = item.get("matchType") or ("=~" if item.get("regex") else "=")
        rendered.append(f"{item['name']}{operator}{_quote(item.get('value', ''))}")
    return rendered


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fields(source: dict, names: dict[str, str], what: str) -> dict:
    unknown = set(source) - set(names)
    assert not unknown, f"{what}: {sorted(unknown)} not rendered by tests/alerting/routing.py: teach it these fields"
    return {names[key]: value for key, value in source.items()}


def _route(route: dict) -> dict:
    rendered = _fields({key: value for key, value in route.items() if key not in {"matchers", "routes"}},
                       _ROUTE_FIELDS, "route")
    if "matchers" in route:
        rendered["matchers"] = _matchers(route["matchers"])
    if "routes" in route:
        rendered["routes"] = [_route(child) for child in route["routes"]]
    return rendered


def _secret_file(selector: dict) -> str:
    assert selector["name"] == WEBHOOK_SECRET, f"a webhook URL from Secret {selector['name']}, not {WEBHOOK_SECRET}"
    return f"{WEBHOOK_DIR}/{selector['key']}"


def _receiver(receiver: dict) -> dict:
    unknown = set(receiver) - {"name", "slackConfigs", "discordConfigs"}
    assert not unknown, f"receiver {receiver['name']}: {sorted(unknown)} not rendered by tests/alerting/routing.py"
    rendered: dict = {"name": receiver["name"]}
    for slack in receiver.get("slackConfigs", []):
        fields = {key: value for key, value in slack.items() if key != "apiURL"}
        rendered.setdefault("slack_configs", []).append(
            {"api_url_file": _secret_file(slack["apiURL"]), **_fields(fields, _SLACK_FIELDS, "slackConfigs")})
    for discord in receiver.get("discordConfigs", []):
        fields = {key: value for key, value in discord.items() if key != "apiURL"}
        rendered.setdefault("discord_configs", []).append(
            {"webhook_url_file": _secret_file(discord["apiURL"]), **_fields(fields, _DISCORD_FIELDS, "discordConfigs")})
    return rendered


def render(alertmanager_config: dict) -> dict:
    """An AlertmanagerConfig as an alertmanager.yml: its route as the root route (the operator makes it a child of
    the cluster's root, matching its namespace), its receivers with each Secret key read from WEBHOOK_DIR/<key>
    (the operator inlines the values), its inhibition rules (the operator adds the namespace to both sides)."""
    spec = alertmanager_config["spec"]
    unknown = set(spec) - {"route", "receivers", "inhibitRules"}
    assert not unknown, f"spec: {sorted(unknown)} not rendered by tests/alerting/routing.py"
    rendered: dict = {"route": _route(spec["route"])}
    if "inhibitRules" in spec:
        rendered["inhibit_rules"] = [
            {"source_matchers": _matchers(rule.get("sourceMatch", [])),
             "target_matchers": _matchers(rule.get("targetMatch", [])),
             **({"equal": rule["equal"]} if "equal" in rule else {})}
            for rule in spec["inhibitRules"]]
    rendered["receivers"] = [_receiver(receiver) for receiver in spec["receivers"]]
    return rendered


def normalized(config: dict) -> dict:
    """``config`` with every matcher as a (name, operator, value) tuple, to compare two spellings of one routing."""
    config = copy.deepcopy(config)
    for route in routes(config["route"]):
        if "matchers" in route:
            route["matchers"] = [parse_matcher(text) for text in route["matchers"]]
    for rule in config.get("inhibit_rules", []):
        for side in ("source_matchers", "target_matchers"):
            rule[side] = [parse_matcher(text) for text in rule.get(side, [])]
    return config


def routes(route: dict) -> Iterator[dict]:
    """A route and every route below it."""
    yield route
    for child in route.get("routes", []):
        yield from routes(child)


# ---------------------------------------------------------------------------------------- the copies tests run

def with_urls(config: dict, urls: dict[str, str]) -> dict:
    """``config`` with each webhook URL file WEBHOOK_DIR/<key> replaced by the inline URL ``urls[key]``."""
    config = copy.deepcopy(config)
    replaced = set()
    for receiver in config["receivers"]:
        for kind, file_field, url_field in (("slack_configs", "api_url_file", "api_url"),
                                            ("discord_configs", "webhook_url_file", "webhook_url")):
            for integration in receiver.get(kind, []):
                directory, _, key = integration.pop(file_field).rpartition("/")
                assert directory == WEBHOOK_DIR and key in urls, f"{receiver['name']} reads {directory}/{key}"
                integration[url_field] = urls[key]
                replaced.add(key)
    assert replaced == set(urls), f"URL files used: {sorted(replaced)}, expected {sorted(urls)}"
    return config


def with_timings(config: dict, **timings: str) -> dict:
    """``config`` with every route's ``group_wait`` (etc., by keyword) that is set replaced: the same tree, faster."""
    config = copy.deepcopy(config)
    for route in routes(config["route"]):
        for field, value in timings.items():
            if field in route:
                route[field] = value
    return config


def write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AMTOOL), *args], capture_output=True, text=True, timeout=60)


#: URLs for configs that are only checked, never run.
PLACEHOLDER_URLS = {SLACK_KEY: "https://hooks.slack.com/services/T0/B0/placeholder",
                    DISCORD_KEY: "https://discord.com/api/webhooks/0/placeholder"}
