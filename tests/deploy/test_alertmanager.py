"""Where antrian's alerts go: deploy/compose/alertmanager/alertmanager.yml (compose) and the AlertmanagerConfig
k8s/base/observability/alertmanager-config.yaml (Kubernetes) are one routing, checked here without running it:
the AlertmanagerConfig against prometheus-operator's CRD schema (tests/deploy/crds/), rendered the operator's way
and compared with the compose file field by field, both accepted by ``amtool check-config`` (Debian's, from
``scripts/ensure-alertmanager.sh``), every alert of alerts.yaml routed by ``amtool config routes test`` to where its
severity says, and every inhibition naming real alerts and labels they carry. tests/alerting/ runs the routing."""

from __future__ import annotations

import re
import subprocess

import jsonschema
import pytest
import yaml

from tests.alerting.routing import (
    AMTOOL,
    COMPOSE_CONFIG,
    DISCORD_KEY,
    KUBERNETES_CONFIG,
    PLACEHOLDER_URLS,
    SLACK,
    SLACK_AND_DISCORD,
    SLACK_KEY,
    WEBHOOK_DIR,
    WEBHOOK_FILES,
    WEBHOOK_SECRET,
    alert_rules,
    amtool,
    compose_config,
    normalized,
    parse_matcher,
    render,
    require_alertmanager,
    version,
    with_urls,
    write,
)
from tests.deploy import crd_schemas
from tests.deploy.k8s import BUILDS, build, find
from tests.support import ROOT

CRD_SCHEMA = "monitoring.coreos.com_alertmanagerconfigs.v1alpha1.json"
#: SPEC's queues: the only values a queue label can have.
QUEUES = {"sync-pembayaran", "emails", "booking-expiry"}
SEVERITY_RANK = {"warning": 1, "critical": 2}
#: Where each severity goes.
RECEIVER_OF = {"critical": SLACK_AND_DISCORD, "warning": SLACK}
#: The Alertmanager release that reads a Discord webhook URL from a file (webhook_url_file).
DISCORD_URL_FILE_SINCE = (0, 26, 0)


@pytest.fixture(scope="module")
def amtool_installed() -> None:
    require_alertmanager()


def alertmanager_config() -> dict:
    return find(build("base"), "AlertmanagerConfig", "antrian")


def schema_problems(item: dict) -> list[str]:
    """``item`` against the CRD's schema, strictly, and each child route against the schema of a route: the CRD
    leaves child routes unchecked (x-kubernetes-preserve-unknown-fields), the operator parses them as routes."""
    problems = crd_schemas._schema_problems(item, CRD_SCHEMA)
    route_schema = crd_schemas._validator(CRD_SCHEMA).schema["properties"]["spec"]["properties"]["route"]
    route_validator = jsonschema.Draft7Validator(route_schema)

    def children(route: dict, path: str) -> None:
        for index, child in enumerate(route.get("routes", [])):
            child_path = f"{path}.routes.{index}"
            problems.extend(f"{child_path}.{'.'.join(str(part) for part in error.absolute_path) or '(route)'}: "
                            f"{error.message}" for error in route_validator.iter_errors(child))
            children(child, child_path)

    children(item["spec"]["route"], "spec.route")
    return problems


def labels_of(rule: dict) -> set[str]:
    """The labels an alert carries: its expression's grouping labels and its rule's own, and alertname."""
    grouping = re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"])
    return {label.strip() for clause in grouping for label in clause.split(",") if label.strip()} | set(
        rule["labels"]) | {"alertname"}


def alertnames(matchers: list[tuple[str, str, str]]) -> set[str]:
    """The alert names a list of matchers selects (by ``alertname=`` or ``alertname=~"A|B"``)."""
    [(_, operator, value)] = [matcher for matcher in matchers if matcher[0] == "alertname"]
    assert operator in ("=", "=~"), operator
    names = value.split("|") if operator == "=~" else [value]
    assert all(re.fullmatch(r"\w+", name) for name in names), f"{value}: name the alerts, no other regex"
    return set(names)


# ------------------------------------------------------------------------------- the AlertmanagerConfig object

@pytest.mark.fast
def test_every_build_deploys_the_alertmanager_config_and_it_passes_its_crds_schema():
    for name in BUILDS:
        item = find(build(name), "AlertmanagerConfig", "antrian")
        assert item["apiVersion"] == "monitoring.coreos.com/v1alpha1", name
        assert schema_problems(item) == [], name
    assert yaml.safe_load(KUBERNETES_CONFIG.read_text())["metadata"]["labels"]["app.kubernetes.io/part-of"] == "antrian"


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.fast
@pytest.mark.parametrize(("change", "expected"), [
    # Discord's URL under Slack's spelling, or missing: it is required
    (lambda spec: _rename(spec["receivers"][1]["discordConfigs"][0], "apiURL", "apiUrl"),
     "spec.receivers.1.discordConfigs.0: 'apiURL' is a required property"),
    # A webhook URL written inline instead of read from the Secret
    (lambda spec: spec["receivers"][0]["slackConfigs"][0].update(apiURL="https://hooks.slack.com/services/x"),
     "spec.receivers.0.slackConfigs.0.apiURL: 'https://hooks.slack.com/services/x' is not of type 'object'"),
    (lambda spec: spec["receivers"][0]["slackConfigs"][0].update(sendResolved="true"),
     "spec.receivers.0.slackConfigs.0.sendResolved: 'true' is not of type 'boolean'"),
    (lambda spec: spec["inhibitRules"][0]["targetMatch"][0].update(matchType="=="),
     "spec.inhibitRules.0.targetMatch.0.matchType: '==' is not one of"),
    (lambda spec: _rename(spec["route"], "groupBy", "group_by"),
     "spec.route: Additional properties are not allowed ('group_by' was unexpected)"),
    # In a child route too, which the CRD itself does not check
    (lambda spec: _rename(spec["route"]["routes"][0], "repeatInterval", "repeat_interval"),
     "spec.route.routes.0.(route): Additional properties are not allowed ('repeat_interval' was unexpected)"),
    (lambda spec: spec["route"]["routes"][0]["matchers"][0].pop("name"),
     "spec.route.routes.0.matchers.0: 'name' is a required property"),
])
def test_an_alertmanager_config_that_breaks_the_crds_schema_is_rejected(change, expected):
    item = alertmanager_config()
    assert schema_problems(item) == [], "the unbroken object is valid"
    change(item["spec"])
    problems = schema_problems(item)
    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.fast
def test_the_kubernetes_routing_is_the_compose_routing():
    # Receivers, the route tree with its timings, the inhibitions and the message templates: all the same
    assert normalized(render(alertmanager_config())) == normalized(compose_config())


@pytest.mark.fast
def test_the_webhook_urls_come_from_the_secret_or_from_files_kept_out_of_git():
    for path in (COMPOSE_CONFIG, KUBERNETES_CONFIG):
        assert not re.search(r"\bhttps?://", yaml.safe_dump(yaml.safe_load(path.read_text()))), \
            f"{path.relative_to(ROOT)} holds a URL: the webhook URLs are secrets"
    for receiver in alertmanager_config()["spec"]["receivers"]:
        for kind in ("slackConfigs", "discordConfigs"):
            for integration in receiver.get(kind, []):
                assert integration["apiURL"]["name"] == WEBHOOK_SECRET
    used = {integration.get("api_url_file") or integration.get("webhook_url_file")
            for receiver in compose_config()["receivers"]
            for integration in [*receiver.get("slack_configs", []), *receiver.get("discord_configs", [])]}
    assert used == {f"{WEBHOOK_DIR}/{SLACK_KEY}", f"{WEBHOOK_DIR}/{DISCORD_KEY}"}

    # Whatever URL file someone puts into the compose folder stays out of git
    for key in (SLACK_KEY, DISCORD_KEY):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(WEBHOOK_FILES / key)], cwd=ROOT, timeout=30)
        assert ignored.returncode == 0, f"{(WEBHOOK_FILES / key).relative_to(ROOT)} would be committed"


@pytest.mark.fast
def test_compose_runs_alertmanager_on_this_routing_and_prometheus_sends_it_the_alerts():
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["alertmanager"]
    image = re.fullmatch(r"prom/alertmanager:v(\d+)\.(\d+)\.(\d+)", service["image"])
    assert image, service["image"]
    assert tuple(int(part) for part in image.groups()) >= DISCORD_URL_FILE_SINCE, "Discord's webhook_url_file"

    options = dict(part[2:].split("=", 1) for part in service["command"] if part.startswith("--"))
    mounts = {target: (source, mode) for source, target, mode in (volume.split(":") for volume in service["volumes"])}
    assert mounts[options["config.file"]] == ("./" + str(COMPOSE_CONFIG.relative_to(ROOT)), "ro")
    assert mounts[WEBHOOK_DIR] == ("./" + str(WEBHOOK_FILES.relative_to(ROOT)), "ro")
    assert WEBHOOK_FILES.is_dir()
    assert options["cluster.listen-address"] == "", "one instance: no gossip port"
    port = options.get("web.listen-address", ":9093").rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}:{port}" in service["ports"]
    assert f"http://127.0.0.1:{port}/-/ready" in service["healthcheck"]["test"]

    prometheus = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    [alertmanagers] = prometheus["alerting"]["alertmanagers"]
    [static] = alertmanagers["static_configs"]
    assert static["targets"] == [f"alertmanager:{port}"]


# ------------------------------------------------------------------------------------------- the routing

@pytest.mark.fast
def test_critical_alerts_go_to_slack_and_discord_quickly_and_the_rest_to_slack():
    config = compose_config()
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert set(receivers[SLACK]) == {"name", "slack_configs"}
    assert set(receivers[SLACK_AND_DISCORD]) == {"name", "slack_configs", "discord_configs"}
    assert all(integration["send_resolved"] is True for receiver in receivers.values()
               for kind in ("slack_configs", "discord_configs") for integration in receiver.get(kind, []))

    root = config["route"]
    assert root["receiver"] == SLACK and "matchers" not in root, "what no route matches still reaches Slack"
    # One notification per alert and queue (and environment): three queues without consumers are three messages
    assert {"alertname", "queue", "namespace"} <= set(root["group_by"])
    [critical] = root["routes"]
    assert critical["receiver"] == SLACK_AND_DISCORD and "routes" not in critical
    assert [parse_matcher(text) for text in critical["matchers"]] == [("severity", "=", "critical")]
    assert seconds(critical["group_wait"]) <= 10 < seconds(root["group_wait"])
    assert seconds(critical["repeat_interval"]) <= 3600 < seconds(root["repeat_interval"])
    assert not critical.get("continue"), "a critical alert is one Slack message, not two"


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    return sum(int(number) * units[unit] for number, unit in parts)


@pytest.mark.fast
def test_each_inhibition_mutes_consequences_of_a_named_cause_that_share_its_labels():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    inhibitions = normalized(compose_config())["inhibit_rules"]
    assert inhibitions, "no inhibition"
    for index, inhibition in enumerate(inhibitions):
        sources = alertnames(inhibition["source_matchers"])
        targets = alertnames(inhibition["target_matchers"])
        assert sources | targets <= set(rules), f"inhibit rule {index} names alerts that do not exist: " \
                                               f"{sorted((sources | targets) - set(rules))}"
        assert not sources & targets, f"inhibit rule {index} would let an alert mute itself"
        # Labels that both sides carry: a label missing on both would count as equal and mute too much
        assert "namespace" in inhibition["equal"], f"inhibit rule {index} would mute across environments"
        for name in sources | targets:
            missing = set(inhibition["equal"]) - labels_of(rules[name])
            assert not missing, f"inhibit rule {index}: {name} has no {sorted(missing)} label"
        for side, names in (("source_matchers", sources), ("target_matchers", targets)):
            for label, operator, value in inhibition[side]:
                if label == "queue":
                    assert operator == "=" and value in QUEUES, (index, value)
                    assert all("queue" in labels_of(rules[name]) for name in names), index
                else:
                    assert label == "alertname", f"inhibit rule {index} matches on {label}: name the alerts"
        # A cause is never less urgent than what it mutes
        assert min(SEVERITY_RANK[rules[name]["labels"]["severity"]] for name in sources) >= max(
            SEVERITY_RANK[rules[name]["labels"]["severity"]] for name in targets), f"inhibit rule {index}"


# ------------------------------------------------------------------------------------------------ amtool

def test_amtool_accepts_the_compose_config(amtool_installed, tmp_path):
    checked = write(with_urls(compose_config(), PLACEHOLDER_URLS), tmp_path / "alertmanager.yml")
    result = amtool("check-config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " - 5 inhibit rules" in result.stdout and " - 2 receivers" in result.stdout, result.stdout

    # The file itself: Debian's 0.25 knows discord_configs but not their webhook_url_file (0.26, what compose
    # runs); it must find nothing else to object to.
    result = amtool("check-config", str(COMPOSE_CONFIG))
    if version(AMTOOL) >= DISCORD_URL_FILE_SINCE:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        errors = [line.strip() for line in (result.stdout + result.stderr).splitlines() if "line " in line]
        assert result.returncode != 0 and errors, result.stdout + result.stderr
        assert all("field webhook_url_file not found" in line for line in errors), errors


def test_amtool_accepts_the_kubernetes_config_as_the_operator_renders_it(amtool_installed, tmp_path):
    checked = write(with_urls(render(alertmanager_config()), PLACEHOLDER_URLS), tmp_path / "rendered.yml")
    result = amtool("check-config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_routes_every_alert_where_its_severity_says(amtool_installed, tmp_path):
    checked = write(with_urls(compose_config(), PLACEHOLDER_URLS), tmp_path / "alertmanager.yml")
    for rule in alert_rules():
        # The labels Prometheus would send, with a queue wherever the alert has one
        labels = {"alertname": rule["alert"], "namespace": "antrian", **rule["labels"]}
        if "queue" in labels_of(rule):
            labels["queue"] = "emails"
        expected = RECEIVER_OF[rule["labels"]["severity"]]
        result = amtool("config", "routes", "test", f"--config.file={checked}", f"--verify.receivers={expected}",
                        *(f"{name}={value}" for name, value in labels.items()))
        assert result.returncode == 0, f"{rule['alert']} goes to {result.stdout.strip()}, not {expected}"
        assert result.stdout.split() == [expected], result.stdout
