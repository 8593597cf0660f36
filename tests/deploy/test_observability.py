"""k8s/base/observability: the alerts (a PrometheusRule) and the Grafana dashboard (a ConfigMap).

promtool (Prometheus' own checker, from ``scripts/ensure-promtool.sh``) checks the rules, runs their unit tests
(alerts_test.yml here) and parses every dashboard query. Then the real processes run, with some traffic, and every
metric name, label and label value that a rule or a panel reads must be on one of their /metrics pages: a
renamed metric fails here, not silently in Grafana or in an alert that can never fire.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from antrian.cli.demo import seed_students
from tests.booking_expiry.helpers import add_bookings, send_sweep
from tests.support import ROOT, metric, wait_until
from tests.sync_api.bookings.helpers import book, create_tour, notification, notify
from tests.sync_api.sync.helpers import wait_for_run

OBSERVABILITY = ROOT / "k8s" / "base" / "observability"
ALERTS = OBSERVABILITY / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "antrian-dashboard.json"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yml")
PROMTOOL = ROOT / "var" / "tools" / "promtool"

#: What alerts_test.yml must show firing (each listed alert with at least one expected alert somewhere).
TESTED_FIRING = {
    "AntrianFailedJobsStored", "AntrianExpirySweepStale", "AntrianHttp5xxRatioHigh", "AntrianQueueNoConsumers",
    "AntrianQueueBacklogGrowing", "AntrianEmailFailureRatioHigh", "AntrianSyncFailureRatioHigh",
    "AntrianRefundDueWaiting", "AntrianOutboxStuck", "AntrianPaymentReconciliationStale",
    "AntrianQueueWaitHigh",
    "AntrianSyncRunStalled",
}
#: Grafana's variables, as a query would see them (the range ones as a typical value).
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "${namespace}": ".*", "$namespace": ".*",
}
#: Labels Prometheus adds when it scrapes (never on a /metrics page).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "service", "endpoint"}
#: PromQL words that look like names but are not metrics (functions and aggregations are found by their "(").
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring",
                "group_left", "group_right"}
#: A kubectl apply (client side) keeps the object in an annotation, limited to 256 KiB in all.
MAX_DASHBOARD_BYTES = 200_000


# ----------------------------------------------------------------------------------------------- helpers

def prometheus_rule() -> dict:
    return yaml.safe_load(ALERTS.read_text())


def alert_rules() -> list[dict]:
    return [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str, str]]:
    """``(panel title, refId, expr)`` of every target of every panel (rows' own panels included)."""
    queries = []
    for panel in all_panels(dashboard()):
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["refId"], target["expr"]))
    return queries


def all_panels(board: dict) -> list[dict]:
    panels = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, as Prometheus would receive it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know is left in: {expr}"
    return expr


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def write_rules(path: Path, groups: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (the sample names of a scrape: ``x_total``, ``x_bucket``)."""
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges and subqueries
    bare = _GROUPING.sub(" ", bare)  # grouping labels
    bare = re.sub(r"\boffset\s+\w+", " ", bare)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", bare):
        name, call = match.groups()
        if call is None and name not in PROMQL_WORDS:  # a name followed by "(" is a function or aggregation
            names.add(name)
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """``(metric, label, operator, value)`` of every label matcher written after a metric name."""
    found = []
    for selector in _SELECTOR.finditer(expr):
        for label, operator, value in _MATCHER.findall(selector.group(2)):
            found.append((selector.group(1), label, operator, value))
    return found


def grouping_labels(expr: str) -> set[str]:
    labels = set()
    for clause in _GROUPING.findall(expr):
        labels |= {label.strip() for label in clause.split(",") if label.strip()}
    return labels


def literal_values(operator: str, value: str) -> list[str]:
    """The values a matcher names literally: ``a`` for ``="a"``, each of ``a|b`` when it holds no other regex."""
    if operator in ("=", "!="):
        return [value]
    alternatives = value.split("|")
    return alternatives if all(re.fullmatch(r"[\w/-]+", alt) for alt in alternatives) else []


def scrape(url: str) -> list[tuple[str, dict[str, str]]]:
    page = requests.get(url, timeout=10).text
    return [(sample.name, dict(sample.labels))
            for family in text_string_to_metric_families(page) for sample in family.samples]


@pytest.fixture(scope="module")
def promtool_installed() -> None:
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL.relative_to(ROOT)} is missing: run scripts/ensure-promtool.sh (make test does)")


# ------------------------------------------------------------------------------------------- the folder

def test_the_folder_builds_the_prometheus_rule_and_the_dashboard_config_map():
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: the test builds k8s/base/observability with `kubectl kustomize`"
    result = subprocess.run([kubectl, "kustomize", str(OBSERVABILITY)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = {(item["kind"], item["metadata"]["name"]): item for item in yaml.safe_load_all(result.stdout) if item}
    assert set(built) == {("PrometheusRule", "antrian"), ("ConfigMap", "antrian-grafana-dashboard"),
                          ("AlertmanagerConfig", "antrian")}

    rule = built["PrometheusRule", "antrian"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "antrian"
    assert "namespace" not in rule["metadata"]

    config_map = built["ConfigMap", "antrian-grafana-dashboard"]
    assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}, "the Grafana sidecar finds it by label"
    assert config_map["data"] == {"antrian-dashboard.json": DASHBOARD.read_text()}
    assert len(DASHBOARD.read_bytes()) < MAX_DASHBOARD_BYTES, "kubectl apply could no longer store the ConfigMap"
    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(config_map, version, strict=True)


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook():
    rules = alert_rules()
    names = [rule.get("alert") for rule in rules]
    assert None not in names, "only alerts here: a recording rule would need its own tests"
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        runbook = rule["annotations"]["runbook"]
        for part in ("What it means", "What to check", "What to do"):
            assert part in runbook, f"{rule['alert']}'s runbook has no {part!r}"
    everything = "\n".join(rule["annotations"]["runbook"] for rule in rules)
    for tool in ("antrian queues", "antrian jobs failed", "/admin/jobs", "antrian jobs retry"):
        assert tool in everything, f"no runbook mentions {tool}"


def test_promtool_accepts_the_rules(promtool_installed, tmp_path):
    rules = write_rules(tmp_path / "antrian-rules.yml", prometheus_rule()["spec"]["groups"])
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_unit_tests_pass(promtool_installed, tmp_path):
    # The rules with only their summary (see alerts_test.yml), beside a copy of the unit tests.
    groups = prometheus_rule()["spec"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    write_rules(tmp_path / "antrian-rules.yml", groups)
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")

    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert TESTED_FIRING <= firing, f"alerts_test.yml never shows these firing: {TESTED_FIRING - firing}"
    assert firing <= {rule["alert"] for rule in alert_rules()}


# ---------------------------------------------------------------------------------------- the dashboard

def test_the_dashboard_is_one_dashboard_of_rows_on_a_chosen_prometheus():
    board = dashboard()
    assert (board["uid"], board["title"], board["refresh"]) == ("antrian", "antrian", "10s")
    assert board["time"] == {"from": "now-1h", "to": "now"}
    assert 36 <= board["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")

    panels = all_panels(board)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert board["panels"][0]["type"] == "row", "every panel sits in a row"
    rows = [panel["title"] for panel in panels if panel["type"] == "row"]
    for word in ("Sync run", "Queues", "Actors", "Emails", "Bookings", "HTTP"):
        assert any(word in title for title in rows), f"no row about {word}: {rows}"

    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} shows nothing"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_promtool_parses_every_dashboard_query(promtool_installed, tmp_path):
    rules = [{"record": f"antrian_dashboard:panel_{index}_{ref_id}", "expr": as_promql(expr)}
             for index, (_title, ref_id, expr) in enumerate(dashboard_queries())]
    path = write_rules(tmp_path / "dashboard-queries.yml", [{"name": "dashboard", "rules": rules}])
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_legends_name_labels_that_their_query_keeps():
    for panel in all_panels(dashboard()):
        for target in panel.get("targets", []):
            kept = grouping_labels(target["expr"])
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in kept, f"{panel['title']} {target['refId']}: {{{{{label}}}}} is not kept by the query"


def test_metric_names_labels_and_values_are_read_from_promql():
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(antrian_http_request_duration_seconds_bucket'
            '{route!~"/healthz|/metrics", namespace=~"$namespace"}[5m]))) / on (route) group_left '
            'max(antrian_x_total) > 2 * 300 and time() - max by (namespace) (antrian_y) > 0')
    assert metric_names(expr) == {"antrian_http_request_duration_seconds_bucket", "antrian_x_total", "antrian_y"}
    assert label_matchers(expr) == [
        ("antrian_http_request_duration_seconds_bucket", "route", "!~", "/healthz|/metrics"),
        ("antrian_http_request_duration_seconds_bucket", "namespace", "=~", "$namespace"),
    ]
    assert grouping_labels(expr) == {"le", "route", "namespace"}
    assert literal_values("=~", "/healthz|/metrics") == ["/healthz", "/metrics"]
    assert literal_values("=~", "5..") == []


# ------------------------------------------------------------------- what the running processes export

def every_expression() -> dict[str, tuple[str, bool]]:
    """Every PromQL expression of the rules, the dashboard, its variables and the alerts' unit tests, by origin,
    and whether the label values it names must be exported too (not for the unit tests' made-up series)."""
    expressions = {f"alert {rule['alert']}": (rule["expr"], True) for rule in alert_rules()}
    expressions |= {f"panel {title} {ref_id}": (as_promql(expr), True) for title, ref_id, expr in dashboard_queries()}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            metric_of = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)
            expressions[f"variable {variable['name']}"] = (metric_of, True)
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for series in test["input_series"]:
            expressions[f"alerts_test.yml series {series['series']}"] = (series["series"], False)
    return expressions


def test_every_metric_the_alerts_and_the_dashboard_read_is_exported(
    clean, start_web, start_school_api, start_worker, start_dramatiq, smtp_server, auth
):
    # Given every antrian process: sync-api, a sync-worker (against a school API that fails some students
    # for a while and some for good), a mailer (whose SMTP server defers one email and refuses two), and
    # booking-expiry
    seed_students(clean, 30)
    upstream = start_school_api("--transient-rate", "0.3", "--permanent-rate", "0.2")
    web = start_web()
    processes = {
        "sync-api": web.metrics,
        "sync-worker": start_worker(upstream, threads=4).metrics_url,
        "mailer": start_dramatiq("mailer", threads=2, **smtp_server.env()).metrics_url,
        "booking-expiry": start_dramatiq("booking-expiry", threads=2).metrics_url,
    }
    smtp_server.replies = ["451 4.3.0 Try again later", "550 5.1.1 No such user", "550 5.1.1 No such user"]

    # When they work: a sync run, four bookings (four invoices), a payment (an e-ticket), a sweep that expires
    # two overdue bookings, and an operator who retries one failed email and flushes the other
    run = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=10)
    assert run.status_code == 202, run.text
    tour = create_tour(web, auth, quota=20)
    bookings = [book(web, auth, tour["id"], quantity=1).json() for _ in range(4)]
    assert wait_for_run(web, auth, run.json()["id"], timeout=120)["failed"] > 0
    wait_until(lambda: failed_jobs(clean, "emails") == 2 and len(smtp_server.messages) == 2, timeout=60,
               what="two invoices failed for good and two sent (one after a retry)")
    # (paid: a booking whose invoice went out; the failed ones stay pending, so their retry still sends)
    [paying, *_] = [b for b in bookings if any(b["code"] in str(m["Subject"]) for m in smtp_server.messages)]
    paid = notify(web, notification(paying["code"], "settlement", paying["total_amount"]))
    assert paid.status_code == 200, paid.text
    wait_until(lambda: len(smtp_server.messages) == 3, timeout=30, what="the e-ticket")

    add_bookings(clean, [tour["id"]], 2, due="all")
    send_sweep()
    wait_until(lambda: metric(processes["booking-expiry"], "antrian_bookings_expired_total") == 2, timeout=30,
               what="the sweep to expire two bookings")
    assert requests.get(f"{web}/readyz", timeout=10).status_code == 200

    samples = [sample for url in processes.values() for sample in scrape(url)]  # failed jobs stored, now
    [retried, *_] = requests.get(f"{web}/api/jobs/failed?queue=emails", headers=auth, timeout=10).json()["items"]
    assert requests.post(f"{web}/api/jobs/failed/{retried['id']}/retry", headers=auth, timeout=10).ok
    assert requests.delete(f"{web}/api/jobs/failed?queue=emails", headers=auth, timeout=10).json()["flushed"] == 1
    wait_until(lambda: len(smtp_server.messages) == 4, timeout=30, what="the retried invoice")
    samples += [sample for url in processes.values() for sample in scrape(url)]

    # Then every metric, label and literal label value that a rule or a panel reads is on some /metrics page
    exported: dict[str, dict[str, set[str]]] = {}
    for name, labels in samples:
        for label, value in labels.items():
            exported.setdefault(name, {}).setdefault(label, set()).add(value)
        exported.setdefault(name, {})
    problems = []
    for origin, (expr, values_too) in every_expression().items():
        names = metric_names(expr)
        problems += [f"{origin}: metric {name} is exported by no process" for name in names - set(exported)]
        known = set().union(*(exported.get(name, {}) for name in names)) | TARGET_LABELS
        problems += [f"{origin}: no metric it reads has a label {label}"
                     for label in grouping_labels(expr) - known]
        for name, label, operator, value in label_matchers(expr):
            if label in TARGET_LABELS or name not in exported:
                continue
            if label not in exported[name]:
                problems.append(f"{origin}: {name} has no label {label}")
                continue
            if values_too:
                seen = exported[name][label]
                problems += [f"{origin}: {name} never has {label}={literal!r} (seen: {sorted(seen)})"
                             for literal in literal_values(operator, value) if literal not in seen]
    assert not problems, "\n".join(problems)


def failed_jobs(engine, queue: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT count(*) FROM failed_jobs WHERE queue_name = :queue"), {"queue": queue}
        ).scalar_one()
