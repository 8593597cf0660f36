"""The schema checks catch what they are there for: a misspelt or misplaced field, a wrong type, a kind with no
schema. Each case starts from a valid object of the base's build and breaks one thing."""

from __future__ import annotations

import pytest

from tests.deploy import crd_schemas
from tests.deploy.k8s import build, find, schema_problems

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


def broken(kind: str, name: str, change) -> dict:
    item = find(build("base"), kind, name)
    assert schema_problems(item) == [], "the unbroken object is valid"
    change(item)
    return item


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(("kind", "name", "change", "expected"), [
    # A misspelt field, at the top of the spec and deep inside it
    ("ScaledObject", "mailer", lambda item: _rename(item["spec"], "maxReplicaCount", "maxReplicas"),
     "spec.maxReplicas: unknown field"),
    ("ScaledObject", "mailer",
     lambda item: _rename(item["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], "scaleDown",
                          "scaledown"),
     "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaledown: unknown field"),
    ("ScaledObject", "mailer", lambda item: _rename(item["spec"]["triggers"][0], "authenticationRef", "authRef"),
     "spec.triggers.0.authRef: unknown field"),
    ("TriggerAuthentication", "antrian-rabbitmq", lambda item: _rename(item["spec"], "secretTargetRef", "secretRef"),
     "spec.secretRef: unknown field"),
    ("ServiceMonitor", "sync-api", lambda item: _rename(item["spec"]["endpoints"][0], "path", "paht"),
     "spec.endpoints.0.paht: unknown field"),
    # The models also take their Python names (populate_by_name): the manifest's API must not
    ("ServiceMonitor", "sync-api",
     lambda item: _rename(item["spec"]["endpoints"][0], "scrapeTimeout", "scrape_timeout"),
     "spec.endpoints.0.scrape_timeout: unknown field"),
    ("PodMonitor", "sync-worker", lambda item: _rename(item["spec"], "podMetricsEndpoints", "podMetricEndpoints"),
     "spec.podMetricEndpoints: unknown field"),
    ("PodMonitor", "sync-worker", lambda item: _rename(item["spec"]["podMetricsEndpoints"][0], "port", "portName"),
     "spec.podMetricsEndpoints.0.portName: unknown field"),
    # A wrong type: a string where KEDA wants a number, a number where it wants a string
    ("ScaledObject", "sync-worker", lambda item: item["spec"].update(maxReplicaCount="4"), "spec.maxReplicaCount"),
    ("ScaledObject", "sync-worker", lambda item: item["spec"]["triggers"][0]["metadata"].update(value=200),
     "spec.triggers.0.metadata.value"),
    # A required field missing (or misspelt), and a field in the wrong place
    ("ScaledObject", "booking-expiry", lambda item: item["spec"].pop("scaleTargetRef"),
     "spec.scaleTargetRef: Field required"),
    ("ServiceMonitor", "sync-api", lambda item: _rename(item["spec"], "endpoints", "endpoint"),
     "spec.endpoints: Field required"),
    ("PodMonitor", "mailer", lambda item: item["spec"].update(interval=item["spec"]["podMetricsEndpoints"][0].pop(
        "interval")), "spec.interval: unknown field"),
])
def test_a_custom_resource_that_breaks_its_crds_schema_is_rejected(kind, name, change, expected):
    problems = schema_problems(broken(kind, name, change))
    assert any(problem.startswith(f"{kind}/{name}: {expected}") for problem in problems), problems


def test_a_prometheus_rule_is_checked_against_its_crd_too():
    rule = {"alert": "AntrianDown", "expr": "up == 0", "for": "5m", "labels": {"severity": "page"}}
    item = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "x"},
            "spec": {"groups": [{"name": "antrian", "rules": [rule]}]}}
    assert schema_problems(item) == []
    _rename(rule, "for", "duration")
    assert schema_problems(item) == ["PrometheusRule/x: spec.groups.0.rules.0.duration: unknown field"]


def test_a_custom_resource_of_an_unknown_version_or_kind_is_rejected_not_skipped():
    old_version = broken("ScaledObject", "mailer", lambda item: item.update(apiVersion="keda.sh/v1"))
    assert "no model for keda.sh/v1 ScaledObject" in " ".join(schema_problems(old_version))
    unknown_kind = broken("PodMonitor", "mailer", lambda item: item.update(kind="Probe"))
    assert "no model for monitoring.coreos.com/v1 Probe" in " ".join(schema_problems(unknown_kind))
    other_group = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "x"}, "spec": {}}
    assert "no schema for cert-manager.io/v1 Certificate" in " ".join(schema_problems(other_group))
    assert crd_schemas.GROUPS == {"keda.sh", "monitoring.coreos.com", "rabbitmq.com"}
    old_rabbitmq = {"apiVersion": "rabbitmq.com/v1", "kind": "RabbitmqCluster", "metadata": {"name": "x"}}
    assert "no model for rabbitmq.com/v1 RabbitmqCluster" in " ".join(schema_problems(old_rabbitmq))


@pytest.mark.parametrize(("change", "expected"), [
    (lambda spec: _rename(spec, "replicas", "replica"), "spec: Additional properties are not allowed ('replica'"),
    (lambda spec: spec.update(replicas="3"), "spec.replicas: '3' is not of type 'integer'"),
    (lambda spec: _rename(spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0],
                          "topologyKey", "topologykey"),
     "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution.0: Additional properties"),
    (lambda spec: spec["override"]["statefulSet"]["spec"]["template"]["spec"].pop("containers"),
     "spec.override.statefulSet.spec.template.spec: 'containers' is a required property"),
])
def test_a_rabbitmq_cluster_is_checked_against_the_operators_crd(change, expected):
    item = find(build("prod"), "RabbitmqCluster", "rabbitmq")
    assert schema_problems(item) == [], "the unbroken object is valid"
    change(item["spec"])
    problems = schema_problems(item)
    assert any(problem.startswith(f"RabbitmqCluster/rabbitmq: {expected}") for problem in problems), problems


@pytest.mark.parametrize(("kind", "name", "change", "expected"), [
    ("Deployment", "sync-worker",
     lambda item: _rename(item["spec"]["template"]["spec"], "terminationGracePeriodSeconds", "terminationGracePeriod"),
     "terminationGracePeriod"),
    ("Deployment", "mailer",
     lambda item: _rename(item["spec"]["template"]["spec"]["containers"][0]["readinessProbe"], "exec", "command"),
     "command"),
    ("Deployment", "sync-api", lambda item: item["spec"].update(replicas="2"), "'2' is not of type 'integer'"),
    ("CronJob", "booking-expiry-schedule", lambda item: item["spec"].update(concurrencyPolicy=False),
     "False is not of type 'string'"),
    # NetworkPolicy (networking.k8s.io/v1): a misspelt field, a peer's selector misspelt, a port of the wrong type
    ("NetworkPolicy", "mailer", lambda item: _rename(item["spec"], "policyTypes", "policyType"), "policyType"),
    ("NetworkPolicy", "sync-api",
     lambda item: _rename(item["spec"]["ingress"][0]["from"][0], "namespaceSelector", "namespaceselector"),
     "namespaceselector"),
    ("NetworkPolicy", "antrian-migrate", lambda item: item["spec"]["egress"][0]["ports"][0].update(port=[5432]),
     "ports.0.port: [5432] is not valid"),
])
def test_a_core_object_that_breaks_kubernetes_schema_is_rejected_strictly(kind, name, change, expected):
    problems = schema_problems(broken(kind, name, change))
    assert len(problems) == 2 and all(expected in problem for problem in problems), problems  # both versions
